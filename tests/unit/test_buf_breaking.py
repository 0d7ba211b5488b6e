"""``buf breaking``, which ``make lint`` runs against the last commit and the last release tag, on a broken copy.

The check guards the published contract (proto/): a field renumbered or a
method dropped breaks every client built from an earlier release. Here it
must pass on an unchanged copy of proto/ and fail, naming the change, on
copies broken on purpose.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUF = ROOT / ".cache" / "buf" / "node_modules" / ".bin" / "buf"
CONTRACT = ROOT / "proto" / "dmulog" / "v1" / "dmulog.proto"

pytestmark = pytest.mark.skipif(not BUF.exists(), reason="buf is not installed (scripts/install-deps.sh installs it)")


def breaking(tmp_path: Path, edit: tuple[str, str] | None) -> subprocess.CompletedProcess[str]:
    """``buf breaking`` of a copy of the module, with ``edit`` (old, new) applied once, against the real one."""
    copy = tmp_path / "copy"
    shutil.copytree(ROOT / "proto", copy / "proto")
    shutil.copy(ROOT / "buf.yaml", copy / "buf.yaml")
    if edit is not None:
        target = copy / CONTRACT.relative_to(ROOT)
        text = target.read_text()
        assert text.count(edit[0]) == 1, f"the edit's anchor {edit[0]!r} is not in the contract exactly once"
        target.write_text(text.replace(edit[0], edit[1]))
    return subprocess.run([str(BUF), "breaking", str(copy), "--against", str(ROOT)], capture_output=True, text=True,
                          timeout=120)  # fmt: skip


def test_an_unchanged_contract_passes(tmp_path: Path) -> None:
    """The copy as it is: no break, so a failure below is the edit's doing."""
    done = breaking(tmp_path, None)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(("edit", "said"), [
    (("  uint64 luid = 2;\n", "  uint64 luid = 20;\n"), "luid"),
    (("rpc GetSyncCount(", "rpc GetSyncTotal("), "GetSyncCount"),
])  # fmt: skip
def test_a_broken_contract_fails(tmp_path: Path, edit: tuple[str, str], said: str) -> None:
    """A field of LogRef renumbered, or a method renamed: buf breaking refuses it, naming what broke."""
    done = breaking(tmp_path, edit)
    assert done.returncode != 0, f"buf breaking accepted {edit}:\n{done.stdout}{done.stderr}"
    assert said in done.stdout + done.stderr, done.stdout + done.stderr
