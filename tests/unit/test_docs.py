"""Every document the repository cites exists, and every protocol section it cites is a heading.

Code gives its reasons by reference ("docs/protocol.md §1.2", "see
docs/performance.md"), so a citation of a file or a section that is not there
sends the reader nowhere, and nothing else would notice. Three kinds of
citation are checked, in every ``*.py``, ``*.lua``, ``*.sh``, ``*.proto``,
``*.yaml``, ``*.md`` and Makefile of the repository:

* a path ``docs/<name>.md`` or ``docs/results/<file>`` (from the repository root);
* ``protocol.md §N`` or ``§N.M`` (several may follow one name: ``§1.1, §1.2``),
  and in docs/protocol.md itself a bare ``§N``: a numbered heading of
  docs/protocol.md;
* in a markdown file, a relative link ``[text](path)``, from that file's folder.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SUFFIXES = frozenset({".py", ".lua", ".sh", ".proto", ".yaml", ".yml", ".md"})
NAMES = frozenset({"Makefile"})
# Not the repository's own text: git, the virtualenv, tool caches, build output.
SKIP = re.compile(r"^\.(git|venv|cache|\w+_cache)$|^__pycache__$|^build$|^node_modules$|\.egg-info$")

DOC_PATH = re.compile(r"(?<![\w./-])(docs/(?:results/[\w.-]*\w|[\w/-]+\.md))")
CITATION = re.compile(r"protocol\.md((?:(?:\s*,\s*|\s+and\s+|\s+)§\s?\d+(?:\.\d+)*)+)")
SECTION = re.compile(r"§\s?(\d+(?:\.\d+)*)")
HEADING = re.compile(r"^#{1,6}\s+(\d+(?:\.\d+)*)\.?\s", re.M)
LINK = re.compile(r"\]\(([^)\s]+)\)")
PROTOCOL = "docs/protocol.md"


def sources(root: Path) -> Iterator[Path]:
    """The repository's own text files that may cite a document, in a stable order."""
    for path in sorted(root.iterdir()):
        if SKIP.search(path.name):
            continue
        if path.is_dir():
            yield from sources(path)
        elif path.suffix in SUFFIXES or path.name in NAMES:
            yield path


def headings(root: Path) -> frozenset[str]:
    """Section numbers of docs/protocol.md ("1", "1.1", ...); none when it is missing."""
    path = root / PROTOCOL
    return frozenset(HEADING.findall(path.read_text())) if path.is_file() else frozenset()


def citations(root: Path) -> Iterator[tuple[str, int, str, Path | str]]:
    """(file, line, what is cited, what must exist): a Path, or a section number of protocol.md."""
    for path in sources(root):
        name = path.relative_to(root).as_posix()
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            for cited in DOC_PATH.findall(line):
                yield name, number, cited, (root / cited).resolve()
            for group in CITATION.findall(line):
                for section in SECTION.findall(group):
                    yield name, number, f"protocol.md §{section}", section
            if name == PROTOCOL:
                for section in SECTION.findall(line):
                    yield name, number, f"§{section}", section
            if path.suffix == ".md":
                for target in LINK.findall(line):
                    if re.match(r"[a-z]+:|#", target):
                        continue
                    yield name, number, target, (path.parent / target.split("#")[0]).resolve()


def problems(root: Path = ROOT) -> list[str]:
    """``file:line: cites X, which ...`` for every citation that leads nowhere."""
    found, seen = [], set()
    sections = headings(root)
    for name, line, cited, target in citations(root):
        if (name, line, target) in seen:  # a markdown link that is also a docs/ path
            continue
        seen.add((name, line, target))
        if isinstance(target, Path):
            if not target.exists():
                found.append(f"{name}:{line}: cites {cited}, which does not exist")
        elif target not in sections:
            found.append(f"{name}:{line}: cites {cited}, which is no heading of {PROTOCOL}")
    return found


def test_every_cited_document_and_section_exists() -> None:
    """No file of the repository cites a document, a result or a protocol section that is not there."""
    assert [] == problems()


def test_the_check_reads_the_citations_the_code_makes() -> None:
    """The scan sees the code's citations (a scan that found none would always pass)."""
    found = list(citations(ROOT))
    cited_sections = {target for _, _, _, target in found if isinstance(target, str)}
    assert {"1.1", "1.2", "3", "4.5", "8", "8.2"} <= cited_sections
    assert any(name == "bridge/errors.py" for name, *_ in found)
    assert len(found) >= 30


def test_the_check_fails_on_broken_citations(tmp_path: Path) -> None:
    """A missing document, result, section or link is reported where it is cited; good ones are not."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "protocol.md").write_text("# Protocol\n\n## 1. Wire\n\n### 1.1 Request\n\nSee §1.1 and §2.\n")
    (docs / "results").mkdir()
    (docs / "results" / "bench.txt").write_text("numbers\n")
    (tmp_path / "bridge").mkdir()
    # The broken names are built here so that this file itself cites nothing missing.
    missing_doc, missing_result, missing_link = (
        "docs/" + "gone.md",
        "docs/results/" + "none.txt",
        "docs/" + "nowhere.md",
    )
    (tmp_path / "bridge" / "wire.py").write_text(
        '"""Offsets: docs/protocol.md §1.1, §1.2; replies: protocol.md §1."""\n'
        f"# see {missing_doc} and docs/results/bench.txt\n"
        f"# and {missing_result}.\n"
    )
    (tmp_path / "README.md").write_text(f"[ok](docs/protocol.md) [no]({missing_link}#top) [web](https://x.org/a.md)\n")
    for skipped in (".venv", ".cache", "dmulog.egg-info"):
        (tmp_path / skipped).mkdir()
        (tmp_path / skipped / "x.md").write_text(f"{missing_doc}\n")
    (tmp_path / ".ci").mkdir()
    (tmp_path / ".ci" / "job.yaml").write_text(f"# {missing_doc}\n")

    assert [
        f".ci/job.yaml:1: cites {missing_doc}, which does not exist",
        f"README.md:1: cites {missing_link}, which does not exist",
        "bridge/wire.py:1: cites protocol.md §1.2, which is no heading of docs/protocol.md",
        f"bridge/wire.py:2: cites {missing_doc}, which does not exist",
        f"bridge/wire.py:3: cites {missing_result}, which does not exist",
        "docs/protocol.md:7: cites §2, which is no heading of docs/protocol.md",
    ] == problems(tmp_path)
