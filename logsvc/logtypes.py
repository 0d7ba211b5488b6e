"""Log types: how each parses its table arguments and prints its status.

Three types share one state machine and differ only here:

* ``clustered-core`` and ``clustered-disk``, parsed as LVM's cmirrord parses
  them, so tables written for cmirrord work unchanged. ``clustered-core``
  keeps its bits only while the table lives, like the kernel's core log.
  ``clustered-disk`` keeps them in Redis across activations (cmirrord kept
  them on the named device), and hands the device back to the kernel so the
  table still holds a reference to it.
* ``dmulog``, the native type: ``<region_size> [sync|nosync]``, persistent
  in Redis with the kernel disk log's resume rule, and no device at all.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from logsvc.errors import InvalidArgument

__all__ = [
    "LOG_TYPES",
    "MAX_DEVICE_NAME",
    "MAX_MAJOR",
    "MAX_MINOR",
    "MAX_REGIONS",
    "MAX_REGION_SIZE",
    "MAX_TARGET_SECTORS",
    "LogSpec",
    "log_device",
    "parse_log_args",
    "status_info",
    "status_table",
]

CORE = "clustered-core"
DISK = "clustered-disk"
NATIVE = "dmulog"
LOG_TYPES = (CORE, DISK, NATIVE)
PERSISTENT = frozenset({DISK, NATIVE})

# 2^28 regions = two 32 MiB bitmaps in Redis; a larger mirror wants a larger
# region size (LVM caps cmirrord logs at 2^21 regions for the same reason).
MAX_REGIONS = 1 << 28

# What the kernel's own types can hold. A CTR outside them is refused before
# anything is stored: past a successful CTR the kernel crashes or fails the
# table, and a failed table gets no DTR, so its keys would stay forever.
#
# NOTE: userspace_ctr() (drivers/md/dm-log-userspace-base.c) keeps
# `lc->region_size = (uint32_t)rdata` of GET_REGION_SIZE's u64 and divides the
# target length by it: 2^32 became 0, a divide error in the kernel. struct
# log_c, alloc_context() (dm-raid1.c) and dm_region_hash_create()
# (dm-region-hash.c) all hold it as uint32_t, so the largest power of two is 2^31.
MAX_REGION_SIZE = 1 << 31
# NOTE: not a kernel limit (ti->len is a u64 sector_t) but Lua's: Redis
# Functions compute with doubles, which hold every integer only below 2^53.
MAX_TARGET_SECTORS = (1 << 53) - 1
# NOTE: userspace_ctr() gives the CTR reply DM_NAME_LEN (128) bytes
# (devices_rdata_size), NUL included, and passes the name to dm_get_device();
# bridge/wire.py's REPLY_CAPACITY holds the same number for the wire.
MAX_DEVICE_NAME = 127  # bytes, before the NUL
# NOTE: dm_devt_from_path() (dm-table.c) reads "%u:%u" into a dev_t with
# MKDEV(): 12 bits of major, 20 of minor (MINORBITS, include/linux/kdev_t.h);
# a pair that does not fit is -EOVERFLOW in dm_get_device(), after the CTR.
MAX_MAJOR = (1 << 12) - 1
MAX_MINOR = (1 << 20) - 1
# NOTE: the rest needs no limit here. The kernel computes region_count
# (region_t, u64) itself with dm_sector_div_up() and ours is at most
# MAX_REGIONS; it refuses a constructor string longer than its 512-byte
# message (dm_consult_userspace(): "Size of tfr exceeds preallocated size")
# before sending it; usr_argc (uint32_t) counts table words.

_DEVICE = re.compile(r"(/[^\s\0]+|[0-9]+:[0-9]+)")
_DECIMAL = re.compile(r"[0-9]+")
_MAJOR_MINOR = re.compile(r"[0-9]{1,10}:[0-9]{1,10}")
_PAIR = re.compile(r"([0-9]+):([0-9]+)")
_OPTIONS = {
    CORE: frozenset({"sync", "nosync", "block_on_error"}),
    DISK: frozenset({"sync", "nosync", "block_on_error"}),
    NATIVE: frozenset({"sync", "nosync"}),
}


@dataclass(frozen=True, slots=True)
class LogSpec:
    """One instance's validated constructor arguments."""

    log_type: str
    target_sectors: int
    region_size: int
    region_count: int
    sync: str  # "", "sync" or "nosync"
    block_on_error: bool
    device: str
    args: tuple[str, ...]

    @property
    def persistent(self) -> bool:
        """Whether the bits outlive the table (disk-log resume rule)."""
        return self.log_type in PERSISTENT

    @property
    def canonical_args(self) -> str:
        """Type and arguments as one string: equal strings mean the same table."""
        return " ".join((self.log_type, *self.args))


def _show(word: str, limit: int = 48) -> str:
    """A word short enough for an error message."""
    return word if len(word) <= limit else word[: limit - 3] + "..."


def _region_size(word: str, target_sectors: int) -> int:
    # NOTE: the mirror computes region numbers with a shift, so only powers of
    # two work; the in-kernel logs also demand >= 2 and <= the target length
    # (_check_region_size() in dm-log.c, on a uint32_t).
    if not _DECIMAL.fullmatch(word):
        raise InvalidArgument(f"region size {word!r} is not a plain decimal number of sectors")
    if len(word.lstrip("0")) > len(str(MAX_REGION_SIZE)):  # (before int(): a word may be any length)
        raise InvalidArgument(f"region size {_show(word)} exceeds the kernel's limit of {MAX_REGION_SIZE} sectors")
    size = int(word)
    if size < 2 or size & (size - 1):
        raise InvalidArgument(f"region size {size} is not a power of two of at least 2 sectors")
    if size > MAX_REGION_SIZE:
        raise InvalidArgument(f"region size {size} exceeds the kernel's limit of {MAX_REGION_SIZE} sectors "
                              "(it holds region sizes in 32 bits)")  # fmt: skip
    if size > target_sectors:
        raise InvalidArgument(f"region size {size} is larger than the target ({target_sectors} sectors)")
    return size


def parse_log_args(target_sectors: int, log_type: str, args: tuple[str, ...] | list[str]) -> LogSpec:
    """Validate a constructor call; raise InvalidArgument naming the problem."""
    args = tuple(args)
    if target_sectors <= 0:
        raise InvalidArgument("target length must be a positive number of sectors")
    if target_sectors > MAX_TARGET_SECTORS:
        raise InvalidArgument(f"target length {target_sectors} exceeds the limit of {MAX_TARGET_SECTORS} sectors "
                              "(2^53 - 1: the log's Redis Functions count in doubles)")  # fmt: skip
    if log_type not in LOG_TYPES:
        raise InvalidArgument(f"unknown log type {log_type!r}; expected one of {', '.join(LOG_TYPES)}")
    rest = list(args)
    device = ""
    if log_type == DISK:
        if not rest or not _DEVICE.fullmatch(rest[0]):
            raise InvalidArgument("clustered-disk needs a log device (a /path or major:minor) before the region size")
        device = rest.pop(0)
    if not rest:
        raise InvalidArgument(f"{log_type} needs a region size")
    region_size = _region_size(rest.pop(0), target_sectors)
    options = rest
    allowed = _OPTIONS[log_type]
    for word in options:
        if word not in allowed:
            raise InvalidArgument(f"unknown {log_type} argument {word!r}; allowed: {', '.join(sorted(allowed))}")
    if len(set(options)) != len(options):
        raise InvalidArgument(f"repeated {log_type} argument in {' '.join(options)!r}")
    if "sync" in options and "nosync" in options:
        raise InvalidArgument("sync and nosync exclude each other")
    sync = "sync" if "sync" in options else "nosync" if "nosync" in options else ""
    region_count = -(-target_sectors // region_size)
    if region_count > MAX_REGIONS:
        raise InvalidArgument(f"{region_count} regions exceed the limit of {MAX_REGIONS}; use a larger region size")
    return LogSpec(log_type, target_sectors, region_size, region_count, sync, "block_on_error" in options, device, args)


def log_device(spec: LogSpec, block_devices: Mapping[str, str]) -> str:
    """The log device as the kernel should reference it and the status show it.

    cmirrord printed the numbers it got from fstat() of the device; logsvc may
    run elsewhere, so the node reports them (``CtrRequest.block_devices``).
    Without a report the device stays as given. A device the node reports
    missing, or a name the kernel could not take back or open, is refused
    now: the kernel would fail the table only after this CTR succeeded, and
    send no DTR for it.
    """
    if not spec.device:
        return ""
    device = spec.device
    if device in block_devices:
        number = block_devices[device]
        if not number:
            raise InvalidArgument(f"log device {_show(device)} is not a block device on the calling node")
        if not _MAJOR_MINOR.fullmatch(number):
            raise InvalidArgument(f"block_devices[{device!r}] is {number!r}, not major:minor")
        device = number
    return _kernel_device_name(device)


def _kernel_device_name(device: str) -> str:
    """``device`` if the kernel can read it from the CTR reply and open it by that name."""
    size = len(device.encode("utf-8"))
    if not device.isascii() or size > MAX_DEVICE_NAME:
        raise InvalidArgument(f"log device {_show(device)!r} ({size} bytes) is not at most {MAX_DEVICE_NAME} "
                              "ASCII bytes, what the kernel's CTR reply holds")  # fmt: skip
    pair = _PAIR.fullmatch(device)
    if pair and (int(pair[1]) > MAX_MAJOR or int(pair[2]) > MAX_MINOR):
        raise InvalidArgument(f"log device {device} does not fit the kernel's dev_t "
                              f"(major at most {MAX_MAJOR}, minor at most {MAX_MINOR})")  # fmt: skip
    return device


def status_info(spec: LogSpec, device: str | None = None) -> str:
    """STATUS_INFO text, as cmirrord prints it (``<#words> <type> ...``).

    ``device`` is the log device as resolved at CTR (see ``log_device``);
    the table's own word when None.
    """
    if spec.log_type == DISK:
        # dmulog never opens the device, so it never fails it.
        return f"3 {DISK} {device or spec.device} A"
    return f"1 {spec.log_type}"


def status_table(spec: LogSpec, device: str | None = None) -> str:
    """STATUS_TABLE text, as cmirrord prints it: ends with a space."""
    sync = f"{spec.sync} " if spec.sync else ""
    boe = "block_on_error" if spec.block_on_error else ""
    device = device or spec.device
    device = f"{device} " if device else ""
    if spec.log_type == NATIVE:
        return f"{NATIVE} {spec.region_size} {sync}"
    return f"{spec.log_type} {device}{spec.region_size} {sync}{boe} "
