"""Tests of logsvc/logtypes.py: constructor arguments and status text of the three log types."""

from __future__ import annotations

import pytest

from logsvc.errors import InvalidArgument
from logsvc.logtypes import (
    LOG_TYPES,
    MAX_DEVICE_NAME,
    MAX_REGION_SIZE,
    MAX_REGIONS,
    MAX_TARGET_SECTORS,
    LogSpec,
    log_device,
    parse_log_args,
    status_info,
    status_table,
)

CORE, DISK, NATIVE = "clustered-core", "clustered-disk", "dmulog"
MLOG = "/dev/mapper/vg-lv_mlog"


def test_log_types():
    """The three log types are clustered-core, clustered-disk and dmulog."""
    expected = (CORE, DISK, NATIVE)
    assert expected == LOG_TYPES


# (target sectors, type, args, expected LogSpec)
VALID = [
    pytest.param(2048, CORE, ["1024"], LogSpec(CORE, 2048, 1024, 2, "", False, "", ("1024",)), id="core"),
    pytest.param(2049, CORE, ["1024"], LogSpec(CORE, 2049, 1024, 3, "", False, "", ("1024",)), id="core-round-up"),
    pytest.param(
        2048, CORE, ["1024", "nosync"], LogSpec(CORE, 2048, 1024, 2, "nosync", False, "", ("1024", "nosync")),
        id="core-nosync",
    ),
    pytest.param(
        2048, CORE, ["1024", "sync"], LogSpec(CORE, 2048, 1024, 2, "sync", False, "", ("1024", "sync")),
        id="core-sync",
    ),
    pytest.param(
        2048, CORE, ["1024", "block_on_error"],
        LogSpec(CORE, 2048, 1024, 2, "", True, "", ("1024", "block_on_error")),
        id="core-block_on_error",
    ),
    pytest.param(
        2048, CORE, ["1024", "block_on_error", "nosync"],
        LogSpec(CORE, 2048, 1024, 2, "nosync", True, "", ("1024", "block_on_error", "nosync")),
        id="core-options-any-order",
    ),
    pytest.param(
        2097152, DISK, ["253:2", "1024"],
        LogSpec(DISK, 2097152, 1024, 2048, "", False, "253:2", ("253:2", "1024")),
        id="disk-major-minor",
    ),
    pytest.param(
        4096, DISK, [MLOG, "1024", "sync"],
        LogSpec(DISK, 4096, 1024, 4, "sync", False, MLOG, (MLOG, "1024", "sync")),
        id="disk-path-sync",
    ),
    pytest.param(1000, NATIVE, ["64"], LogSpec(NATIVE, 1000, 64, 16, "", False, "", ("64",)), id="dmulog"),
    pytest.param(
        1000, NATIVE, ["64", "nosync"], LogSpec(NATIVE, 1000, 64, 16, "nosync", False, "", ("64", "nosync")),
        id="dmulog-nosync",
    ),
    pytest.param(2, NATIVE, ["2"], LogSpec(NATIVE, 2, 2, 1, "", False, "", ("2",)), id="smallest-region-equals-target"),
    pytest.param(
        2 * MAX_REGIONS, NATIVE, ["2"], LogSpec(NATIVE, 2 * MAX_REGIONS, 2, MAX_REGIONS, "", False, "", ("2",)),
        id="exactly-max-regions",
    ),
    pytest.param(
        2**40, CORE, [str(2**30)], LogSpec(CORE, 2**40, 2**30, 1024, "", False, "", (str(2**30),)),
        id="huge-region",
    ),
    pytest.param(
        2**33, NATIVE, [str(2**31)], LogSpec(NATIVE, 2**33, 2**31, 4, "", False, "", (str(2**31),)),
        id="largest-region-the-kernel-holds",
    ),
    pytest.param(
        2**53 - 1, NATIVE, [str(2**31)], LogSpec(NATIVE, 2**53 - 1, 2**31, 2**22, "", False, "", (str(2**31),)),
        id="longest-target-lua-counts-exactly",
    ),
    pytest.param(
        2**33, NATIVE, ["0002147483648"], LogSpec(NATIVE, 2**33, 2**31, 4, "", False, "", ("0002147483648",)),
        id="largest-region-with-leading-zeros",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("target", "log_type", "args", "expected"), VALID)
def test_parse_valid(target, log_type, args, expected):
    """Valid constructor arguments give the spec with region size, region count, sync mode and device."""
    assert expected == parse_log_args(target, log_type, args)


# (target sectors, type, args) that must raise InvalidArgument
INVALID = [
    pytest.param(0, CORE, ["1024"], id="zero-target"),
    pytest.param(-8, NATIVE, ["2"], id="negative-target"),
    pytest.param(2048, "core", ["1024"], id="kernel-core-type"),
    pytest.param(2048, "disk", ["253:2", "1024"], id="kernel-disk-type"),
    pytest.param(2048, "Clustered-Core", ["1024"], id="type-case"),
    pytest.param(2048, "", ["1024"], id="empty-type"),
    pytest.param(2048, CORE, [], id="core-missing-region-size"),
    pytest.param(2048, NATIVE, [], id="dmulog-missing-region-size"),
    pytest.param(2048, DISK, ["253:2"], id="disk-missing-region-size"),
    pytest.param(2048, CORE, ["0"], id="region-0"),
    pytest.param(2048, CORE, ["1"], id="region-1"),
    pytest.param(2048, CORE, ["3"], id="region-3"),
    pytest.param(2048, CORE, ["1000"], id="region-not-power-of-two"),
    pytest.param(2048, CORE, ["1536"], id="region-1536"),
    pytest.param(2048, CORE, ["4096"], id="region-larger-than-target"),
    pytest.param(1000, NATIVE, ["1024"], id="region-larger-than-short-target"),
    pytest.param(2048, CORE, ["0x400"], id="region-hex"),
    pytest.param(2048, CORE, ["02000"], id="region-octal-looking-not-power-of-two"),
    pytest.param(2048, CORE, ["1e3"], id="region-exponent"),
    pytest.param(2048, CORE, ["+1024"], id="region-plus"),
    pytest.param(2048, CORE, ["-1024"], id="region-negative"),
    pytest.param(2048, CORE, ["1024.0"], id="region-fraction"),
    pytest.param(2048, CORE, [" 1024"], id="region-space"),
    pytest.param(2048, CORE, [""], id="region-empty"),
    pytest.param(2048, CORE, ["nosync"], id="option-instead-of-region"),
    pytest.param(
        2048, NATIVE, ["\u00b2"], id="region-superscript-two",
    ),
    pytest.param(
        2048, NATIVE, ["\u0661\u0660\u0662\u0664"], id="region-arabic-indic-digits",
    ),
    pytest.param(2048, CORE, ["1024", "foo"], id="core-unknown-word"),
    pytest.param(2048, CORE, ["1024", "NOSYNC"], id="core-word-case"),
    pytest.param(2048, CORE, ["1024", "integrated_flush"], id="core-integrated_flush"),
    pytest.param(2048, NATIVE, ["64", "block_on_error"], id="dmulog-block_on_error"),
    pytest.param(2048, NATIVE, ["64", "253:2"], id="dmulog-device-after-region"),
    pytest.param(2048, NATIVE, ["253:2", "64"], id="dmulog-device"),
    pytest.param(2048, CORE, ["1024", "sync", "nosync"], id="sync-and-nosync"),
    pytest.param(2048, DISK, ["253:2", "1024", "nosync", "sync"], id="disk-nosync-and-sync"),
    pytest.param(2048, CORE, ["1024", "nosync", "nosync"], id="repeated-nosync"),
    pytest.param(2048, CORE, ["1024", "sync", "sync"], id="repeated-sync"),
    pytest.param(2048, CORE, ["1024", "block_on_error", "block_on_error"], id="repeated-block_on_error"),
    pytest.param(2048, NATIVE, ["64", "nosync", "nosync"], id="dmulog-repeated-nosync"),
    pytest.param(2048, DISK, ["1024"], id="disk-missing-device"),
    pytest.param(2048, DISK, [], id="disk-no-args"),
    pytest.param(2048, DISK, ["dev/sdb", "1024"], id="disk-relative-path"),
    pytest.param(2048, DISK, ["253", "1024"], id="disk-major-only"),
    pytest.param(2048, DISK, ["253:", "1024"], id="disk-no-minor"),
    pytest.param(2048, DISK, ["253:2:1", "1024"], id="disk-three-numbers"),
    pytest.param(2048, DISK, ["/", "1024"], id="disk-root-only"),
    pytest.param(
        2048, DISK, ["\u0662\u0665\u0663:\u0662", "1024"], id="disk-arabic-indic-major-minor",
    ),
    pytest.param(2 * MAX_REGIONS + 1, NATIVE, ["2"], id="too-many-regions"),
    pytest.param(2**33, NATIVE, [str(2**32)], id="region-2^32-truncated-to-0-by-the-kernel"),
    pytest.param(2**40, NATIVE, [str(2**34)], id="region-2^34"),
    pytest.param(2**64 - 1, NATIVE, [str(2**63)], id="region-2^63"),
    pytest.param(2**40, NATIVE, ["9" * 5000], id="region-5000-digits"),
    pytest.param(2**53, NATIVE, [str(2**31)], id="target-2^53"),
    pytest.param(2**64 - 1, NATIVE, [str(2**31)], id="target-u64-max"),
    pytest.param(2**50, CORE, ["2"], id="far-too-many-regions"),
]  # fmt: skip


@pytest.mark.parametrize(("target", "log_type", "args"), INVALID)
def test_parse_invalid(target, log_type, args):
    """Invalid constructor arguments raise InvalidArgument (never another exception)."""
    with pytest.raises(InvalidArgument):
        parse_log_args(target, log_type, args)


def test_args_are_kept_verbatim():
    """The spec keeps the table arguments as given, and canonical_args joins type and arguments."""
    spec = parse_log_args(4096, DISK, ["253:2", "1024", "block_on_error", "nosync"])
    expected = (("253:2", "1024", "block_on_error", "nosync"), "clustered-disk 253:2 1024 block_on_error nosync")
    assert expected == (spec.args, spec.canonical_args)


@pytest.mark.parametrize(("log_type", "args", "persistent"), [(CORE, ["8"], False), (DISK, ["1:2", "8"], True),
                                                              (NATIVE, ["8"], True)])  # fmt: skip
def test_persistent(log_type, args, persistent):
    """clustered-disk and dmulog keep their bits across activations; clustered-core does not."""
    assert persistent == parse_log_args(64, log_type, args).persistent


# (type, args, STATUS_INFO text, STATUS_TABLE text), as cmirrord prints them (protocol.md §8.2)
STATUS = [
    pytest.param(CORE, ["1024"], "1 clustered-core", "clustered-core 1024  ", id="core"),
    pytest.param(CORE, ["1024", "nosync"], "1 clustered-core", "clustered-core 1024 nosync  ", id="core-nosync"),
    pytest.param(CORE, ["1024", "sync"], "1 clustered-core", "clustered-core 1024 sync  ", id="core-sync"),
    pytest.param(
        CORE, ["1024", "block_on_error"], "1 clustered-core", "clustered-core 1024 block_on_error ",
        id="core-block_on_error",
    ),
    pytest.param(
        CORE, ["1024", "block_on_error", "nosync"], "1 clustered-core", "clustered-core 1024 nosync block_on_error ",
        id="core-nosync-block_on_error",
    ),
    pytest.param(DISK, ["253:2", "1024"], "3 clustered-disk 253:2 A", "clustered-disk 253:2 1024  ", id="disk"),
    pytest.param(
        DISK, ["253:2", "1024", "sync"], "3 clustered-disk 253:2 A", "clustered-disk 253:2 1024 sync  ",
        id="disk-sync",
    ),
    pytest.param(
        DISK, ["/dev/vg/log", "1024", "nosync", "block_on_error"], "3 clustered-disk /dev/vg/log A",
        "clustered-disk /dev/vg/log 1024 nosync block_on_error ", id="disk-path-nosync-block_on_error",
    ),
    pytest.param(NATIVE, ["64"], "1 dmulog", "dmulog 64 ", id="dmulog"),
    pytest.param(NATIVE, ["64", "nosync"], "1 dmulog", "dmulog 64 nosync ", id="dmulog-nosync"),
    pytest.param(NATIVE, ["64", "sync"], "1 dmulog", "dmulog 64 sync ", id="dmulog-sync"),
]  # fmt: skip


@pytest.mark.parametrize(("log_type", "args", "info", "table"), STATUS)
def test_status_info(log_type, args, info, table):
    """STATUS_INFO text is '<#words> <type> ...' exactly as cmirrord prints it."""
    assert info == status_info(parse_log_args(2048, log_type, args))


@pytest.mark.parametrize(("log_type", "args", "info", "table"), STATUS)
def test_status_table(log_type, args, info, table):
    """STATUS_TABLE text matches cmirrord byte for byte, trailing spaces included."""
    assert table == status_table(parse_log_args(2048, log_type, args))


@pytest.mark.parametrize(("log_type", "args", "info", "table"), STATUS)
def test_status_table_ends_with_space(log_type, args, info, table):
    """The table text ends with a space, since the kernel appends the leg list right after it."""
    assert status_table(parse_log_args(2048, log_type, args)).endswith(" ")


@pytest.mark.parametrize(("log_type", "args", "info", "table"), STATUS)
def test_status_info_word_count(log_type, args, info, table):
    """The leading number of the info text counts the words after it, as LVM's parser expects."""
    words = status_info(parse_log_args(2048, log_type, args)).split(" ")
    expected = int(words[0])
    assert expected == len(words) - 1


# (table's device word, what the node reported, the device the kernel and the status get)
DEVICES = [
    pytest.param("/dev/loop2", {"/dev/loop2": "7:2"}, "7:2", id="path-resolved"),
    pytest.param("/dev/loop2", {}, "/dev/loop2", id="path-not-reported"),
    pytest.param("/dev/loop2", {"/dev/other": "7:3"}, "/dev/loop2", id="other-path-reported"),
    pytest.param("253:2", {}, "253:2", id="major-minor-as-given"),
]


@pytest.mark.parametrize(("word", "reported", "expected"), DEVICES)
def test_log_device_uses_the_node_report(word, reported, expected):
    """clustered-disk's device is the node's major:minor when reported, else the table's word."""
    assert expected == log_device(parse_log_args(2048, DISK, [word, "1024"]), reported)


def test_log_device_of_other_types_is_empty():
    """Only clustered-disk has a log device, whatever the node reported."""
    assert "" == log_device(parse_log_args(2048, CORE, ["1024"]), {"/dev/loop2": "7:2"})


@pytest.mark.parametrize(
    ("reported", "message"),
    [
        pytest.param({MLOG: ""}, "not a block device on the calling node", id="missing-on-node"),
        pytest.param({MLOG: "sda"}, "not major:minor", id="garbage"),
        pytest.param({MLOG: "7:"}, "not major:minor", id="half"),
    ],
)
def test_log_device_refuses_what_the_node_cannot_open(reported, message):
    """A device the node reports missing fails CTR now: the kernel would fail the table later and send no DTR."""
    with pytest.raises(InvalidArgument, match=message):
        log_device(parse_log_args(2048, DISK, [MLOG, "1024"]), reported)


def test_status_shows_the_resolved_device():
    """With the node's numbers, the status texts read like cmirrord's fstat()-based ones (protocol.md §8.2)."""
    spec = parse_log_args(2048, DISK, [MLOG, "1024", "nosync"])
    expected = ("3 clustered-disk 253:7 A", "clustered-disk 253:7 1024 nosync  ")
    assert expected == (status_info(spec, "253:7"), status_table(spec, "253:7"))


@pytest.mark.parametrize(
    ("target", "args", "message"),
    [
        pytest.param(2**33, [str(2**32)], "region size 4294967296 exceeds the kernel's limit of 2147483648 sectors",
                     id="region-2^32"),
        pytest.param(2**40, ["9" * 5000], "region size 9{45}... exceeds the kernel's limit", id="region-5000-digits"),
        pytest.param(2**53, [str(2**31)], r"target length 9007199254740992 exceeds the limit of 9007199254740991",
                     id="target-2^53"),
        pytest.param(2**64 - 1, [str(2**63)], "target length 18446744073709551615 exceeds", id="target-u64-max"),
    ],
)  # fmt: skip
def test_limits_of_the_kernel_and_of_lua_say_which(target, args, message):
    """A number the kernel's u32 region size or Lua's doubles cannot hold is refused with a message naming the limit."""
    assert (MAX_REGION_SIZE, MAX_TARGET_SECTORS) == (2**31, 2**53 - 1)
    with pytest.raises(InvalidArgument, match=message):
        parse_log_args(target, NATIVE, args)


# (table's device word, what the node reported): names the kernel could not take back or open
UNUSABLE_DEVICES = [
    pytest.param("/dev/" + "x" * 256, {}, "is not at most 127 ASCII bytes", id="path-component-over-255"),
    pytest.param("/" + "d" * MAX_DEVICE_NAME, {}, "is not at most 127 ASCII bytes", id="path-of-128-bytes"),
    pytest.param("/dev/m\u00e9lange", {}, "is not at most 127 ASCII bytes", id="path-not-ascii"),
    pytest.param("9" * 200 + ":1", {}, "is not at most 127 ASCII bytes", id="major-of-200-digits"),
    pytest.param("9" * 100 + ":1", {}, "does not fit the kernel's dev_t", id="major-of-100-digits"),
    pytest.param("4096:0", {}, r"does not fit the kernel's dev_t \(major at most 4095, minor at most 1048575\)",
                 id="major-2^12"),
    pytest.param("0:1048576", {}, "does not fit the kernel's dev_t", id="minor-2^20"),
    pytest.param(MLOG, {MLOG: "4096:1"}, "does not fit the kernel's dev_t", id="reported-major-2^12"),
]  # fmt: skip


@pytest.mark.parametrize(("word", "reported", "message"), UNUSABLE_DEVICES)
def test_log_device_refuses_what_the_kernel_cannot_take_back(word, reported, message):
    """The reply's device must fit the kernel's 128 bytes with its NUL, be ASCII, and as major:minor fit a dev_t."""
    with pytest.raises(InvalidArgument, match=message):
        log_device(parse_log_args(2048, DISK, [word, "1024"]), reported)


@pytest.mark.parametrize(
    "word",
    [
        pytest.param("/" + "d" * (MAX_DEVICE_NAME - 1), id="path-of-127-bytes"),
        pytest.param("4095:1048575", id="largest-dev_t"),
        pytest.param("0:0", id="zero-dev_t"),
    ],
)
def test_log_device_at_the_kernel_limits_is_kept(word):
    """A name just inside the kernel's limits goes back to it unchanged."""
    assert word == log_device(parse_log_args(2048, DISK, [word, "1024"]), {})
