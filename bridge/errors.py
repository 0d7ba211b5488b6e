"""How a gRPC outcome becomes the errno the kernel gets.

The kernel reads dm_ulog_request.error as 0 or a negative errno and acts on a
few values: -ESRCH sends it into its reconnect loop (replay CTR and RESUME,
then ask again), -EAGAIN makes it ask again at once. Everything else is a
plain failure of that one request (protocol.md §4.5).
"""

from __future__ import annotations

import errno

import grpc

from dmulog.quotas import CAPACITY_REFUSED

__all__ = ["RETRYABLE", "STATUS_TO_ERRNO", "UNREACHABLE_ERRNO", "capacity_refused", "errno_of", "retryable"]

STATUS_TO_ERRNO: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.INVALID_ARGUMENT: errno.EINVAL,
    grpc.StatusCode.OUT_OF_RANGE: errno.EINVAL,
    grpc.StatusCode.NOT_FOUND: errno.ESRCH,
    grpc.StatusCode.ALREADY_EXISTS: errno.EEXIST,
    grpc.StatusCode.FAILED_PRECONDITION: errno.EBUSY,
    grpc.StatusCode.PERMISSION_DENIED: errno.EACCES,
    grpc.StatusCode.UNAUTHENTICATED: errno.EACCES,
    grpc.StatusCode.UNIMPLEMENTED: errno.EOPNOTSUPP,
}

# Outcomes that say nothing about the request itself: logsvc (or its Redis)
# was not reachable. The bridge retries these within its budget.
RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
    }
)

# What a non-critical request gets when logsvc stayed unreachable.
UNREACHABLE_ERRNO = errno.EHOSTDOWN


def capacity_refused(code: grpc.StatusCode, detail: str) -> bool:
    """Whether the outcome is a tenant's log or region quota (dmulog/quotas.py): final, never retried."""
    return code == grpc.StatusCode.RESOURCE_EXHAUSTED and detail.startswith(CAPACITY_REFUSED)


def retryable(code: grpc.StatusCode, detail: str) -> bool:
    """Whether the bridge sends the request again within its budget."""
    return code in RETRYABLE and not capacity_refused(code, detail)


def errno_of(code: grpc.StatusCode, detail: str = "") -> int:
    """Positive errno for a final (non-retryable) gRPC status."""
    if capacity_refused(code, detail):
        return errno.EDQUOT
    return STATUS_TO_ERRNO.get(code, errno.EIO)
