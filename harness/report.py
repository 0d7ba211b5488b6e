"""Where a measurement's report goes besides the terminal: ``docs/results/<name>.txt``.

The numbers the docs discuss (docs/performance.md, docs/crash-safety.md) are
these files, written by the runs themselves, so what the repository shows is
always one whole run's output, never a hand-edited copy of it. A run that
stops with an exception leaves the file as it was; one that finishes writes
all it printed, problems included.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

__all__ = ["RESULTS", "add_out_option", "tee"]

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"


def add_out_option(parser: argparse.ArgumentParser, name: str) -> None:
    """``--out PATH``, by default the committed report of this measurement, ``RESULTS / <name>.txt``."""
    default = RESULTS / f"{name}.txt"
    shown = default.relative_to(RESULTS.parents[1])
    parser.add_argument("--out", type=Path, default=default, metavar="PATH",
                        help=f"also write the report here (default: {shown})")  # fmt: skip


class _Both(io.TextIOBase):
    """A text stream that writes to two others."""

    def __init__(self, first: TextIO, second: io.StringIO):
        self._first, self._second = first, second

    def write(self, text: str) -> int:
        self._first.write(text)
        self._second.write(text)
        return len(text)

    def flush(self) -> None:
        self._first.flush()


@contextlib.contextmanager
def tee(path: Path) -> Iterator[None]:
    """Print as usual inside the block, and write everything printed to ``path`` when it ends without raising."""
    copy = io.StringIO()
    with contextlib.redirect_stdout(_Both(sys.stdout, copy)):
        yield
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(copy.getvalue())
    partial.replace(path)
