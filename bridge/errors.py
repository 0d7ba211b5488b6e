"""How a gRPC outcome becomes the errno the kernel gets.

The kernel reads dm_ulog_request.error as 0 or a negative errno and acts on a
few values: -ESRCH sends it into its reconnect loop (replay CTR and RESUME,
then ask again), -EAGAIN makes it ask again at once. Everything else is a
plain failure of that one request (protocol.md §4.5).
"""

from __future__ import annotations

import errno

import grpc

__all__ = ["RETRYABLE", "STATUS_TO_ERRNO", "UNREACHABLE_ERRNO", "errno_of"]

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


def errno_of(code: grpc.StatusCode) -> int:
    """Positive errno for a final (non-retryable) gRPC status."""
    return STATUS_TO_ERRNO.get(code, errno.EIO)
