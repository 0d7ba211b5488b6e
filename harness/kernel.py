"""Debian's own kernel for the test VM: found through apt, downloaded once, unpacked and cached.

The kernel is booted from its decompressed ELF image through qemu's PVH entry point
when the kernel supports it: the bzImage stub needs ~3.5 s to decompress itself under
emulation, more than the rest of the boot. Unpacking is done next to the final place
and renamed into it, so the cache holds complete kernels or nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import json
import lzma
import os
import re
import shutil
import subprocess
import tempfile
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

__all__ = ["Kernel", "KernelVMError", "default_cache_dir", "ensure_kernel"]

_KERNEL_MARKER = "dmulog-kernel.json"
_APT_LISTS = Path("/var/lib/apt/lists")


class KernelVMError(RuntimeError):
    """The test VM could not be prepared or started (not: the guest script failed)."""


@dataclasses.dataclass(frozen=True)
class Kernel:
    """An unpacked Debian kernel package, ready to boot and to ``modprobe -d`` from.

    Attributes:
        package: Debian package name, e.g. ``linux-image-6.1.0-56-amd64``.
        package_version: Debian version of that package, e.g. ``6.1.192-2``.
        version: the kernel release (``uname -r`` in the guest).
        root: where the package was unpacked (``dpkg -x``).
        vmlinuz: the bootable image as shipped (a compressed bzImage).
        modules_dir: ``<root>/lib/modules/<version>`` (depmod already run).
        vmlinux: the same kernel decompressed, when it can be booted directly (PVH
            entry point); None otherwise. Booting it skips the ~3.5 s that the bzImage
            stub spends decompressing itself under emulation.
    """

    package: str
    package_version: str
    version: str
    root: Path
    vmlinuz: Path
    modules_dir: Path
    vmlinux: Path | None = None

    @property
    def boot_image(self) -> Path:
        """What qemu's ``-kernel`` should load: vmlinux when possible, else vmlinuz."""
        return self.vmlinux or self.vmlinuz

    @property
    def modprobe_base(self) -> Path:
        """The directory to give ``modprobe -d`` / ``depmod -b`` (parent of ``lib/modules``)."""
        return self.modules_dir.parents[2]


def default_cache_dir() -> Path:
    """``$DMULOG_CACHE`` or ``~/.cache/dmulog``: the kernel .deb is ~70 MB, fetch it once."""
    env = os.environ.get("DMULOG_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "dmulog"


def ensure_kernel(cache_dir: Path | None = None) -> Kernel:
    """Return Debian's current ``linux-image-*-amd64``, downloading and unpacking it once.

    The package name comes from ``apt-cache depends linux-image-amd64`` so the tests
    follow Debian's current kernel. Repeated calls in one process are free (memoised);
    across processes only the apt-cache lookup runs. If apt knows no such package, the
    newest kernel already in the cache is used (works offline); only with an empty cache
    is ``apt-get update`` run once before asking again.
    """
    return _ensure_kernel(Path(cache_dir) if cache_dir else default_cache_dir())


@functools.cache
def _ensure_kernel(cache_dir: Path) -> Kernel:
    kernels = cache_dir / "kernel"
    kernels.mkdir(parents=True, exist_ok=True)
    package = _current_kernel_package(kernels)
    if package is None:
        cached = _cached_kernels(kernels)
        if cached:
            return cached[-1]
        _run(["apt-get", "update", "-q"], "apt-get update")
        package = _current_kernel_package(kernels)
        if package is None:
            raise KernelVMError("apt-cache knows no linux-image-amd64 dependency, even after apt-get update")
    with _locked(cache_dir / ".lock"):
        existing = _load_kernel(kernels / package)
        if existing is not None:
            return existing
        return _unpack_kernel(package, kernels)


def _current_kernel_package(kernels: Path) -> str | None:
    """Name of the versioned package ``linux-image-amd64`` depends on, or None.

    ``apt-cache`` takes about a second here, so the answer is remembered next to the
    kernels, keyed by the modification time of apt's package lists: it can only change
    when those lists do.
    """
    try:
        lists_mtime = _APT_LISTS.stat().st_mtime_ns
    except OSError:
        lists_mtime = -1
    memo = kernels / "current-package.json"
    with contextlib.suppress(OSError, ValueError, KeyError):
        saved = json.loads(memo.read_text())
        if saved["lists_mtime"] == lists_mtime:
            return str(saved["package"])
    proc = subprocess.run(["apt-cache", "depends", "linux-image-amd64"], capture_output=True, text=True, check=False)
    match = re.search(r"Depends:\s*(linux-image-\d\S*)", proc.stdout)
    if match is None:
        return None
    with contextlib.suppress(OSError):
        memo.write_text(json.dumps({"lists_mtime": lists_mtime, "package": match.group(1)}) + "\n")
    return match.group(1)


def _cached_kernels(kernels: Path) -> list[Kernel]:
    found = [k for d in kernels.iterdir() if (k := _load_kernel(d)) is not None]
    return sorted(found, key=lambda k: _version_key(k.version))


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", version))


def _load_kernel(root: Path) -> Kernel | None:
    """The Kernel unpacked at ``root``, or None if it is missing or was never completed."""
    try:
        meta = json.loads((root / _KERNEL_MARKER).read_text())
    except (OSError, ValueError):
        return None
    kernel = Kernel(
        package=meta["package"],
        package_version=meta["package_version"],
        version=meta["version"],
        root=root,
        vmlinuz=root / meta["vmlinuz"],
        modules_dir=root / meta["modules_dir"],
        vmlinux=root / meta["vmlinux"] if meta.get("vmlinux") else None,
    )
    files_there = kernel.vmlinuz.is_file() and kernel.modules_dir.is_dir()
    return kernel if files_there and (kernel.vmlinux is None or kernel.vmlinux.is_file()) else None


def _unpack_kernel(package: str, kernels: Path) -> Kernel:
    """Download ``package``, unpack it next to its final place, depmod, then rename.

    The rename makes the cache entry appear complete or not at all, so an interrupted
    download never leaves a half-unpacked kernel that a later run would trust.
    """
    work = Path(tempfile.mkdtemp(prefix=f".{package}-", dir=kernels))
    try:
        _run(["apt-get", "download", "-q", package], f"apt-get download {package}", cwd=work)
        debs = sorted(work.glob(f"{package}_*.deb"))
        if not debs:
            raise KernelVMError(f"apt-get download {package} produced no .deb in {work}")
        deb = debs[0]
        package_version = deb.name.split("_")[1]
        root = work / "root"
        _run(["dpkg", "-x", str(deb), str(root)], f"dpkg -x {deb.name}")
        deb.unlink()
        module_dirs = [p for p in root.glob("*/modules/*") if p.is_dir()]
        module_dirs += [p for p in root.glob("usr/lib/modules/*") if p.is_dir()]
        if len(module_dirs) != 1:
            raise KernelVMError(f"expected one lib/modules/<version> in {deb.name}, found {module_dirs}")
        modules_dir = module_dirs[0]
        version = modules_dir.name
        vmlinuz = root / "boot" / f"vmlinuz-{version}"
        if not vmlinuz.is_file():
            raise KernelVMError(f"{deb.name} has no boot/vmlinuz-{version}")
        base = modules_dir.parents[2]
        # NOTE: the .deb ships no modules.dep; modprobe -d needs it.
        _run(["depmod", "-b", str(base), version], "depmod")
        vmlinux = root / "boot" / f"vmlinux-{version}"
        config = root / "boot" / f"config-{version}"
        pvh = config.is_file() and "CONFIG_PVH=y" in config.read_text().splitlines()
        meta = {
            "package": package,
            "package_version": package_version,
            "version": version,
            "vmlinuz": str(vmlinuz.relative_to(root)),
            "modules_dir": str(modules_dir.relative_to(root)),
            "vmlinux": str(vmlinux.relative_to(root)) if pvh and _extract_vmlinux(vmlinuz, vmlinux) else None,
        }
        (root / _KERNEL_MARKER).write_text(json.dumps(meta, indent=2) + "\n")
        final = kernels / package
        if final.exists():
            shutil.rmtree(final)
        root.rename(final)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    kernel = _load_kernel(final)
    if kernel is None:
        raise KernelVMError(f"unpacked kernel at {final} is incomplete")
    return kernel


def _extract_vmlinux(vmlinuz: Path, dest: Path) -> bool:
    """Decompress the ELF kernel embedded in a bzImage into ``dest``; False if none found.

    Same idea as the kernel's scripts/extract-vmlinux: find a compressed stream that
    decompresses to an ELF file. Only the formats the stdlib reads (xz, gzip) are tried.
    """
    data = vmlinuz.read_bytes()
    decoders = (
        (b"\xfd7zXZ\x00", lambda blob: lzma.LZMADecompressor().decompress(blob)),
        (b"\x1f\x8b\x08", lambda blob: zlib.decompressobj(31).decompress(blob)),
    )
    for magic, decode in decoders:
        start = data.find(magic)
        while start != -1:
            with contextlib.suppress(lzma.LZMAError, zlib.error, EOFError):
                elf = decode(data[start:])
                if elf.startswith(b"\x7fELF"):
                    dest.write_bytes(elf)
                    return True
            start = data.find(magic, start + 1)
    return False


def _run(cmd: Sequence[str], what: str, cwd: Path | None = None) -> None:
    proc = subprocess.run(list(cmd), cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise KernelVMError(f"{what} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock so parallel test runs do not download the kernel twice."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
