"""Tests of logsvc/errors.py: Lua error words to exceptions, exceptions to gRPC status codes."""

from __future__ import annotations

import re

import grpc
import pytest

from logsvc import errors
from logsvc.errors import (
    STATUS_OF,
    WORD_TO_ERROR,
    AlreadyExists,
    Busy,
    DeadlineExceeded,
    InvalidArgument,
    LogError,
    LostWrites,
    NotFound,
    Overtaken,
    PendingWork,
    PermissionDenied,
    QuotaExceeded,
    StoreUnavailable,
    TooLarge,
    Unreadable,
    from_lua_error,
)
from logsvc.store import library_code


@pytest.mark.parametrize(
    ("message", "cls", "text"),
    [
        ("EINVAL region 70 is out of range: the instance has 64 regions", InvalidArgument,
         "region 70 is out of range: the instance has 64 regions"),
        ("ENOENT no instance node-a/42 of this log", NotFound, "no instance node-a/42 of this log"),
        ("EEXIST instance node-a/42 exists with arguments \"dmulog 64\"", AlreadyExists,
         "instance node-a/42 exists with arguments \"dmulog 64\""),
        ("EBUSY node b runs this log as dmulog with 64", Busy, "node b runs this log as dmulog with 64"),
        ("ENOENT", NotFound, ""),
        ("EINVAL  two spaces", InvalidArgument, " two spaces"),
    ],
)  # fmt: skip
def test_from_lua_error_known_words(message, cls, text):
    """A Lua error starting with a known word becomes that word's exception carrying the rest of the message."""
    actual = from_lua_error(message)
    assert cls is type(actual)
    assert text == str(actual)


@pytest.mark.parametrize(
    "message",
    [
        "",
        "ERR Error running script",
        "NOSCRIPT No matching script",
        "einval lower case",
        "EINVALID not the word",
        " EINVAL leading space",
        "ESTALE unmapped word",
        "EINVAL:colon",
        "LOADING Redis is loading the dataset in memory",
    ],
)
def test_from_lua_error_other_messages(message):
    """A message that does not start with one of our words exactly is not one of ours."""
    assert from_lua_error(message) is None


def test_word_table():
    """The eight Lua error words map to their exception classes."""
    expected = {"EINVAL": InvalidArgument, "ENOENT": NotFound, "EEXIST": AlreadyExists, "EBUSY": Busy,
                "ETIMEDOUT": DeadlineExceeded, "ESTEP": PendingWork, "ELOST": LostWrites,
                "EQUOTA": QuotaExceeded}  # fmt: skip
    assert expected == WORD_TO_ERROR


def test_status_of_table():
    """Each LogError class maps to its gRPC status code."""
    expected = {
        InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
        NotFound: grpc.StatusCode.NOT_FOUND,
        AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
        Busy: grpc.StatusCode.FAILED_PRECONDITION,
        StoreUnavailable: grpc.StatusCode.UNAVAILABLE,
        DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
        PendingWork: grpc.StatusCode.UNAVAILABLE,
        LostWrites: grpc.StatusCode.UNAVAILABLE,
        TooLarge: grpc.StatusCode.RESOURCE_EXHAUSTED,
        Unreadable: grpc.StatusCode.DATA_LOSS,
        Overtaken: grpc.StatusCode.UNAVAILABLE,
        PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
        QuotaExceeded: grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
    assert expected == STATUS_OF


def test_every_error_class_has_a_status():
    """Every LogError subclass defined in logsvc.errors has a status code."""
    classes = {
        v for v in vars(errors).values() if isinstance(v, type) and issubclass(v, LogError) and v is not LogError
    }
    expected = classes
    assert expected == set(STATUS_OF)


def test_every_lua_error_word_is_mapped():
    """Every error word the Lua library raises with err('WORD', ...) has an exception class."""
    words = set(re.findall(r"\berr\('([A-Z]+)'", library_code()))
    assert words
    assert set() == words - set(WORD_TO_ERROR)


def test_error_classes_share_one_base():
    """Every mapped class derives from LogError, so the interceptor catches them all."""
    assert all(issubclass(cls, LogError) for cls in (*WORD_TO_ERROR.values(), *STATUS_OF))


@pytest.mark.parametrize("size", [0, 1, errors.MAX_DETAIL - 1, errors.MAX_DETAIL])
def test_clip_keeps_text_within_the_limit(size):
    """A detail of at most MAX_DETAIL characters goes out as it is."""
    assert "z" * size == errors.clip("z" * size)


@pytest.mark.parametrize("size", [errors.MAX_DETAIL + 1, 4000, 1_000_000])
def test_clip_cuts_longer_text_and_says_so(size):
    """Longer text is cut to the limit, with its original length at the end."""
    clipped = errors.clip("z" * size)
    assert errors.MAX_DETAIL == len(clipped)
    assert clipped.startswith("zzz") and clipped.endswith(f"... [cut: {size} characters]")


def test_quoted_is_repr_up_to_its_limit():
    """Client input in a message: repr() when short, cut when long (never the whole megabyte)."""
    assert "'node-a\\n'" == errors.quoted("node-a\n")
    assert 80 == len(errors.quoted("n" * 10_000))
    assert errors.quoted("n" * 10_000).startswith("'nnn")
