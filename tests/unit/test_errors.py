"""Tests of bridge/errors.py: how a gRPC outcome becomes the errno the kernel gets."""

from __future__ import annotations

import errno

import grpc
import pytest

from bridge.errors import RETRYABLE, STATUS_TO_ERRNO, UNREACHABLE_ERRNO, errno_of

S = grpc.StatusCode

# Every non-OK status and the positive errno the kernel gets (negated in the reply).
EXPECTED_ERRNO = {
    S.CANCELLED: errno.EIO,
    S.UNKNOWN: errno.EIO,
    S.INVALID_ARGUMENT: errno.EINVAL,
    S.DEADLINE_EXCEEDED: errno.EIO,
    S.NOT_FOUND: errno.ESRCH,
    S.ALREADY_EXISTS: errno.EEXIST,
    S.PERMISSION_DENIED: errno.EACCES,
    S.RESOURCE_EXHAUSTED: errno.EIO,
    S.FAILED_PRECONDITION: errno.EBUSY,
    S.ABORTED: errno.EIO,
    S.OUT_OF_RANGE: errno.EINVAL,
    S.UNIMPLEMENTED: errno.EOPNOTSUPP,
    S.INTERNAL: errno.EIO,
    S.UNAVAILABLE: errno.EIO,
    S.DATA_LOSS: errno.EIO,
    S.UNAUTHENTICATED: errno.EACCES,
}


def test_expected_table_covers_every_failure_status():
    """The expected table names every gRPC status code except OK."""
    expected = set(S) - {S.OK}
    assert expected == set(EXPECTED_ERRNO)


@pytest.mark.parametrize(("code", "expected"), list(EXPECTED_ERRNO.items()), ids=lambda v: getattr(v, "name", v))
def test_errno_of(code, expected):
    """errno_of maps each final gRPC status to its errno, and anything unlisted to EIO."""
    assert expected == errno_of(code)


def test_status_to_errno_table():
    """STATUS_TO_ERRNO lists exactly the statuses with a specific errno."""
    expected = {
        S.INVALID_ARGUMENT: errno.EINVAL,
        S.OUT_OF_RANGE: errno.EINVAL,
        S.NOT_FOUND: errno.ESRCH,
        S.ALREADY_EXISTS: errno.EEXIST,
        S.FAILED_PRECONDITION: errno.EBUSY,
        S.PERMISSION_DENIED: errno.EACCES,
        S.UNAUTHENTICATED: errno.EACCES,
        S.UNIMPLEMENTED: errno.EOPNOTSUPP,
    }
    assert expected == STATUS_TO_ERRNO


def test_not_found_sends_the_kernel_into_its_reconnect_loop():
    """An unknown log instance (NOT_FOUND) becomes ESRCH, the errno that makes the kernel replay CTR and RESUME."""
    expected = 3
    assert expected == errno_of(S.NOT_FOUND)


def test_retryable_set():
    """Only the statuses that say logsvc or Redis was unreachable are retried."""
    expected = frozenset({S.UNAVAILABLE, S.DEADLINE_EXCEEDED, S.RESOURCE_EXHAUSTED, S.ABORTED})
    assert expected == RETRYABLE


def test_retryable_statuses_have_no_specific_errno():
    """No retryable status is also mapped to a final errno."""
    expected: set[grpc.StatusCode] = set()
    assert expected == RETRYABLE & set(STATUS_TO_ERRNO)


def test_unreachable_errno():
    """A non-critical request whose logsvc stayed unreachable gets EHOSTDOWN, which the kernel does not retry."""
    expected = errno.EHOSTDOWN
    assert expected == UNREACHABLE_ERRNO
    assert UNREACHABLE_ERRNO not in (errno.EAGAIN, errno.ESRCH)


def test_all_errnos_are_positive():
    """Every errno in the table is positive; the reply encoder negates it."""
    assert all(v > 0 for v in STATUS_TO_ERRNO.values())
