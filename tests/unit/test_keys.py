"""Tests of logsvc/keys.py: one hash tag per log, so Redis Cluster keeps a log in one slot."""

from __future__ import annotations

import re

import pytest

from logsvc.keys import LogKeys, hash_tag, log_key_pattern, log_keys, uuid_from_log_key
from logsvc.store import library_code

UUIDS = [
    "LVM-k3Jd0WfQ8xVtR2mNcYb7Z1qP4sHe6uGa",
    "a",
    "{",
    "}",
    "{}",
    "}{",
    "{a}",
    "a}b{c",
    "x{y}z}",
    "%",
    "%7B",
    "%7b",
    "%257B",
    "%{",
    "{%7B}",
    "%%7D}",
    "ü-ñ-日本",
    " ",
    "x" * 128,
]


def crc16_xmodem(data: bytes) -> int:
    """CRC16/XMODEM (poly 0x1021, init 0), the checksum Redis Cluster hashes keys with."""
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def key_slot(key: str) -> int:
    """Redis Cluster slot: hash the text between the first '{' and the next '}' if non-empty, else the key."""
    raw = key.encode("utf-8")
    start = raw.find(b"{")
    if start != -1:
        end = raw.find(b"}", start + 1)
        if end != -1 and end != start + 1:
            raw = raw[start + 1 : end]
    return crc16_xmodem(raw) % 16384


@pytest.mark.parametrize(
    ("key", "slot"),
    [
        ("123456789", 0x31C3),  # the CRC16/XMODEM check value
        ("somekey", 11058),  # CLUSTER KEYSLOT examples in the Redis docs
        ("foo{hash_tag}", 2515),
        ("foo", 12182),
        ("{user1000}.following", 3443),  # same tag, same slot
        ("{user1000}.followers", 3443),
    ],
)
def test_reference_key_slot(key, slot):
    """The test's own slot function reproduces the CRC16 check value and slots Redis documents."""
    assert slot == key_slot(key)


def test_empty_hash_tag_hashes_whole_key():
    """The reference slot function hashes the whole key when the braces are empty, as Redis does."""
    expected = crc16_xmodem(b"a{}b") % 16384
    assert expected == key_slot("a{}b")


def test_keys_in_lua_order():
    """A log's keys are named log, inst, sync, dirty, marks, prio, nodemarks and scratch, in that order."""
    expected = LogKeys(
        "dmulog:{LVM-x}:log",
        "dmulog:{LVM-x}:inst",
        "dmulog:{LVM-x}:sync",
        "dmulog:{LVM-x}:dirty",
        "dmulog:{LVM-x}:marks",
        "dmulog:{LVM-x}:prio",
        "dmulog:{LVM-x}:nodemarks",
        "dmulog:{LVM-x}:scratch",
    )
    assert expected == log_keys("LVM-x")


def test_keys_are_the_ones_the_library_names():
    """The Lua library's KEY_NAMES list is LogKeys' fields, in order: both sides name the same keys."""
    names = re.search(r"KEY_NAMES = \{([^}]*)\}", library_code()).group(1)
    expected = list(LogKeys._fields)
    assert expected == re.findall(r"'([a-z]+)'", names)


def test_prefix():
    """The key prefix is configurable."""
    expected = "other:{u}:dirty"
    assert expected == log_keys("u", prefix="other").dirty


@pytest.mark.parametrize("uuid", UUIDS)
def test_all_keys_share_one_hash_tag(uuid):
    """Every key of a log carries the same single {tag} and it is the encoded UUID."""
    tags = set()
    for key in log_keys(uuid):
        start = key.index("{")
        end = key.index("}", start)
        assert key.count("{") == 1
        assert key.count("}") == 1
        tags.add(key[start + 1 : end])
    expected = {hash_tag(uuid)}
    assert expected == tags


@pytest.mark.parametrize("uuid", UUIDS)
def test_all_keys_land_in_one_slot(uuid):
    """All keys of a log hash to the slot of its encoded UUID, even when the UUID holds braces."""
    expected = {key_slot("{" + hash_tag(uuid) + "}")}
    assert expected == {key_slot(key) for key in log_keys(uuid)}


def test_raw_braces_would_split_a_log():
    """Without the encoding a UUID with '}' would give a tag that ends early: the encoding is needed."""
    uuid = "a}b"
    raw_keys = [f"dmulog:{{{uuid}}}:{name}" for name in LogKeys._fields]
    assert {key_slot(k) for k in raw_keys} == {key_slot("{a}")}
    assert key_slot("{" + hash_tag(uuid) + "}") != key_slot("{a}")


@pytest.mark.parametrize(
    ("uuid", "tag"),
    [
        ("plain", "plain"),
        ("{", "%7B"),
        ("}", "%7D"),
        ("%", "%25"),
        ("%7B", "%257B"),
        ("{x}", "%7Bx%7D"),
        ("%{%}", "%25%7B%25%7D"),
    ],
)
def test_hash_tag_encoding(uuid, tag):
    """hash_tag percent-encodes %, { and } and leaves everything else alone."""
    assert tag == hash_tag(uuid)


def test_hash_tag_is_injective():
    """Distinct UUIDs, including ones that look like encodings, never share a tag."""
    tags = [hash_tag(u) for u in UUIDS]
    assert len(set(UUIDS)) == len(set(tags))


@pytest.mark.parametrize("uuid", UUIDS)
def test_hash_tag_has_no_braces(uuid):
    """An encoded tag never contains a brace, so Redis always reads the whole tag."""
    tag = hash_tag(uuid)
    assert "{" not in tag
    assert "}" not in tag


@pytest.mark.parametrize("uuid", UUIDS)
def test_uuid_from_log_key_inverts(uuid):
    """uuid_from_log_key gives back the UUID of log_keys(uuid).log."""
    assert uuid == uuid_from_log_key(log_keys(uuid).log)


@pytest.mark.parametrize("uuid", ["a", "%7D}", "{x}"])
def test_uuid_from_log_key_with_prefix(uuid):
    """uuid_from_log_key inverts log_keys under a custom prefix too."""
    assert uuid == uuid_from_log_key(log_keys(uuid, prefix="p").log, prefix="p")


@pytest.mark.parametrize(
    "key",
    ["dmulog:{a}:sync", "other:{a}:log", "dmulog:a:log", "dmulog:{a}:logx", "", "dmulog:{a}"],
)
def test_uuid_from_log_key_rejects_other_keys(key):
    """A key that is not a dmulog log key raises ValueError."""
    with pytest.raises(ValueError):
        uuid_from_log_key(key)


def test_log_key_pattern():
    """The SCAN pattern matches the log key of any UUID under the prefix."""
    expected = ("dmulog:{*}:log", "p:{*}:log")
    assert expected == (log_key_pattern(), log_key_pattern("p"))
