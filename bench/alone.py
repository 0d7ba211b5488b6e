"""One table of ``python -m bench`` run by itself (``python -m bench.durable``, ``python -m bench.cluster``).

What such a run shares: the trace options, a scratch directory removed
afterwards, and the report also written to ``docs/results/<name>.txt``.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from bench.replay import load_trace
from harness.report import add_out_option, tee

__all__ = ["run_alone"]


def run_alone(argv: list[str] | None, *, module: str, doc: str, report: str,
              table: Callable[[argparse.Namespace, list[bytes], Path], str],
              options: Callable[[argparse.ArgumentParser], None] = lambda _p: None) -> int:  # fmt: skip
    """Parse ``--trace``, ``--requests``, ``--out`` and ``options``; print ``table(args, trace, workdir)``."""
    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=doc.splitlines()[0])
    parser.add_argument("--trace", default="mixed-synced", help="trace name in bench/traces (default: %(default)s)")
    parser.add_argument("--requests", type=int, default=0, help="requests per mirror (a prefix of the trace; 0: all)")
    options(parser)
    add_out_option(parser, report)
    args = parser.parse_args(argv)
    trace = load_trace(args.trace)[: args.requests or None]
    workdir = Path(tempfile.mkdtemp(prefix=f"dmulog-{report}-"))
    with tee(args.out):
        try:
            print(table(args, trace, workdir))
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0
