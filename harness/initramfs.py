"""The test VM's initramfs: static busybox, the modules it takes to mount 9p, and ``/init``.

``/init`` is ``harness/guest/init.sh`` with its placeholders filled in. It gives the
guest a tmpfs root that bind-mounts every top-level entry of the host root (shared
read-only over 9p), plus guest-only ``/proc``, ``/sys``, ``/dev``, ``/tmp``, ``/run``,
a writable 9p share at ``/results`` (how anything gets back to the host) and the
unpacked kernel at ``/kernel`` (so ``modprobe -d /kernel`` works wherever the cache
lives). The synthetic root is needed because ``/results`` cannot be created on a
read-only share. The guest therefore uses the host's Python, the project's
virtualenv and the checkout unchanged.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from harness.kernel import Kernel, KernelVMError, default_cache_dir

__all__ = [
    "GUEST_MODULES",
    "INITRAMFS_MODULES",
    "INIT_TEMPLATE",
    "NINEP",
    "OPTIONAL_GUEST_MODULES",
    "build_initramfs",
    "guest_modprobe_base",
    "render_init",
]

#: Modules inside the initramfs, roots only: their dependencies are added from
#: modules.dep. They are what it takes to mount the host root over virtio-9p.
INITRAMFS_MODULES = ("virtio_pci", "9pnet_virtio", "9p")

#: Loaded in every guest before the script runs (with the host's kmod ``modprobe -d``).
GUEST_MODULES = ("dm_mod", "dm_log", "dm_region_hash", "dm_mirror", "dm_log_userspace", "loop")

#: Loaded when the kernel has them; a missing one is not an error. dm_flakey is for fault
#: tests, the rest for a virtio-net device a caller may add through ``qemu_extra``.
OPTIONAL_GUEST_MODULES = ("dm_flakey", "failover", "net_failover", "virtio_net")

#: The template of ``/init``; see its header for the placeholders.
INIT_TEMPLATE = Path(__file__).resolve().parent / "guest" / "init.sh"

#: Mount options of every 9p share.
NINEP = "trans=virtio,version=9p2000.L,msize=512000"

_GUEST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_PLACEHOLDER = re.compile(r"@[A-Z_]+@")


def build_initramfs(kernel: Kernel, cache_dir: Path | None = None) -> Path:
    """Return a gzipped cpio initramfs for ``kernel``: busybox-static, 9p modules, /init.

    Cached under ``<cache_dir>/initramfs/`` by a hash of everything that goes into it,
    so editing the init template or changing kernel or busybox builds a new one and an
    unchanged setup costs only the hashing.
    """
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    busybox = _static_busybox()
    modules = _module_load_order(kernel, INITRAMFS_MODULES)
    init = render_init(kernel, [name for name, _ in modules])
    digest = hashlib.sha256()
    digest.update(init.encode())
    digest.update(busybox.read_bytes())
    for name, path in modules:
        digest.update(name.encode())
        digest.update(path.read_bytes())
    target = cache_dir / "initramfs" / f"initramfs-{kernel.version}-{digest.hexdigest()[:16]}.cpio.gz"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="initramfs-", dir=target.parent) as tmp:
        stage = Path(tmp) / "root"
        (stage / "bin").mkdir(parents=True)
        (stage / "modules").mkdir()
        shutil.copy2(busybox, stage / "bin" / "busybox")
        for name, path in modules:
            shutil.copyfile(path, stage / "modules" / f"{name}.ko")
        (stage / "init").write_text(init)
        (stage / "init").chmod(0o755)
        names = sorted(str(p.relative_to(stage)) for p in stage.rglob("*"))
        proc = subprocess.run(
            ["cpio", "--quiet", "-o", "-H", "newc", "-R", "0:0"],
            input=("\n".join(names) + "\n").encode(),
            cwd=stage,
            capture_output=True,
            check=False,
        )
        if proc.returncode != 0:
            raise KernelVMError(f"cpio failed: {proc.stderr.decode(errors='replace')}")
        partial = Path(tmp) / "initramfs.cpio.gz"
        partial.write_bytes(gzip.compress(proc.stdout, compresslevel=6, mtime=0))
        os.replace(partial, target)
    return target


def _static_busybox() -> Path:
    """The busybox binary; it must be static because the initramfs has no libc."""
    found = shutil.which("busybox")
    path = Path(found) if found else Path("/bin/busybox")
    if not path.is_file():
        raise KernelVMError("busybox not found: apt-get install busybox-static")
    with path.open("rb") as f:
        head = f.read(4096)
    if b"ld-linux" in head:
        raise KernelVMError(f"{path} is dynamically linked: apt-get install busybox-static")
    return path


def _module_load_order(kernel: Kernel, roots: Sequence[str]) -> list[tuple[str, Path]]:
    """``(name, .ko path)`` for ``roots`` and their dependencies, dependencies first.

    Built-in modules (``modules.builtin``) need no loading and are skipped; an unknown
    name is an error, since the guest could not mount its root without it.
    """
    deps: dict[str, tuple[Path, list[str]]] = {}
    for line in (kernel.modules_dir / "modules.dep").read_text().splitlines():
        target, _, rest = line.partition(":")
        deps[_module_name(target)] = (kernel.modules_dir / target, [_module_name(d) for d in rest.split()])
    builtin_file = kernel.modules_dir / "modules.builtin"
    builtin = {_module_name(x) for x in builtin_file.read_text().split()} if builtin_file.exists() else set()
    order: list[tuple[str, Path]] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen:
            return
        seen.add(name)
        if name not in deps:
            if name in builtin:
                return
            raise KernelVMError(f"kernel {kernel.version} has no module {name}")
        path, requires = deps[name]
        for dep in requires:
            visit(dep)
        order.append((name, path))

    for root in roots:
        visit(_module_name(root))
    return order


def _module_name(path: str) -> str:
    """Module name as the kernel knows it: file stem, ``-`` folded to ``_``."""
    stem = path.rsplit("/", 1)[-1]
    for suffix in (".ko", ".ko.xz", ".ko.gz", ".ko.zst"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    return stem.replace("-", "_")


def _host_modprobe() -> str:
    """Absolute path of the host's kmod ``modprobe`` (busybox's has no ``-d``)."""
    for candidate in (shutil.which("modprobe"), "/usr/sbin/modprobe", "/sbin/modprobe"):
        if candidate and Path(candidate).is_file():
            return str(Path(candidate))
    raise KernelVMError("modprobe not found: apt-get install kmod")


def guest_modprobe_base(kernel: Kernel) -> str:
    """``modprobe -d`` argument inside the guest, where ``kernel.root`` is mounted at ``/kernel``."""
    rel = kernel.modprobe_base.relative_to(kernel.root)
    return "/kernel" if str(rel) == "." else f"/kernel/{rel}"


def render_init(kernel: Kernel, modules: Sequence[str], template: Path = INIT_TEMPLATE) -> str:
    """``/init`` for ``kernel``: the template with every placeholder filled in.

    A placeholder left over (a typo in the template, or one this function does not
    know) would reach busybox as a literal word and fail far from its cause, so it
    is an error here.
    """
    replacements = {
        "@MODULES@": " ".join(modules),
        "@MODPROBE_BASE@": guest_modprobe_base(kernel),
        "@MODPROBE@": _host_modprobe(),
        "@GUEST_MODULES@": " ".join(GUEST_MODULES),
        "@OPTIONAL_MODULES@": " ".join(OPTIONAL_GUEST_MODULES),
        "@GUEST_PATH@": _GUEST_PATH,
        "@NINEP@": NINEP,
    }
    text = template.read_text()
    for key, value in replacements.items():
        text = text.replace(key, value)
    left = sorted(set(_PLACEHOLDER.findall(text)))
    if left:
        raise KernelVMError(f"{template}: unknown placeholder(s) {', '.join(left)}")
    return text
