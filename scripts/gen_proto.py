"""Regenerate the Python code of proto/dmulog/v1/dmulog.proto into dmulog/v1/.

One command (``make proto``) so the generated files never drift from the
contract; CI runs it and fails when ``git diff`` shows a change.
"""

from __future__ import annotations

import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    """Run protoc with the grpc plugin and type stubs."""
    args = [
        "protoc",
        f"-I{ROOT / 'proto'}",
        f"--python_out={ROOT}",
        f"--pyi_out={ROOT}",
        f"--grpc_python_out={ROOT}",
        str(ROOT / "proto/dmulog/v1/dmulog.proto"),
    ]
    return protoc.main(args)


if __name__ == "__main__":
    sys.exit(main())
