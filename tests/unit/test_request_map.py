"""docs/architecture.md names only code that exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
REF = re.compile(r"\b((?:bridge|logsvc|dmulog)/[\w/]+\.(?:py|lua)):([\w.]+)")


def _defined(path: Path, name: str) -> bool:
    text = path.read_text()
    last = name.split(".")[-1]
    patterns = [rf"^\s*(async\s+def|def|class)\s+{last}\b", rf"^{last}\s*[:=]", rf"^local function {last}\b"]
    return any(re.search(p, text, re.M) for p in patterns)


def test_every_name_in_the_request_map_exists() -> None:
    """Each file:name reference in the request map points at a real definition."""
    refs = REF.findall((ROOT / "docs/architecture.md").read_text())
    assert len(refs) >= 15
    missing = [f"{f}:{n}" for f, n in refs if not (ROOT / f).exists() or not _defined(ROOT / f, n)]
    assert [] == missing
