"""The bridge's gRPC client of logsvc: one channel, one stub, bounded retries.

The channel and stub are made once; every request reuses them. The target
may name several logsvc replicas (``ipv4:10.0.0.5:7500,10.0.0.6:7500``, or a
``dns:///`` name with several addresses): calls are spread round-robin over
the ones that are up, and a replica that goes away just drops out. A call that
fails because logsvc (or its Redis) is unreachable is retried with a jittered
backoff for ``budget`` seconds; each attempt has its own deadline, and the
whole stays under the kernel's 15 s request timeout, so the kernel never
logs "Request timed out" on our account.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import grpc

from bridge.errors import RETRYABLE, UNREACHABLE_ERRNO, errno_of
from dmulog.logs import event
from dmulog.retry import RetryPolicy
from dmulog.v1 import dmulog_pb2_grpc as pb_grpc

__all__ = ["CallFailed", "LogsvcClient"]

log = logging.getLogger("dmulog.bridge.client")


class CallFailed(Exception):
    """The request ended with ``errno`` (positive) for the kernel."""

    def __init__(self, code: int, detail: str):
        super().__init__(detail)
        self.errno = code


class _Retryable(Exception):
    def __init__(self, error: grpc.aio.AioRpcError):
        super().__init__(error.details())
        self.error = error


@dataclass(frozen=True)
class ClientConfig:
    """Timing of calls to logsvc."""

    attempt_timeout: float = 3.0
    budget: float = 9.0


class LogsvcClient:
    """Calls DirtyLog RPCs by name."""

    def __init__(self, target: str, config: ClientConfig | None = None, channel: grpc.aio.Channel | None = None):
        self.target = target
        self._config = config or ClientConfig()
        self._channel = channel or grpc.aio.insecure_channel(
            target,
            options=[
                ("grpc.enable_retries", 0),
                ("grpc.initial_reconnect_backoff_ms", 100),
                ("grpc.max_reconnect_backoff_ms", 1000),
                ("grpc.keepalive_time_ms", 10000),
                ("grpc.service_config", json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})),
            ],
        )
        self._stub = pb_grpc.DirtyLogStub(self._channel)
        self._retry = RetryPolicy(budget=self._config.budget, base=0.05, cap=1.0, retryable=(_Retryable,))

    async def close(self) -> None:
        """Close the channel."""
        await self._channel.close()

    async def call(self, rpc: str, request: Any, *, critical: bool) -> Any:
        """Call ``rpc``; raise CallFailed with the errno the kernel should get.

        After the retry budget a critical request fails with EAGAIN (the
        kernel asks again at once, so it keeps waiting without acting on an
        answer we could not make durable); any other with EHOSTDOWN.
        """
        method = getattr(self._stub, rpc)
        timeout = self._config.attempt_timeout

        async def attempt() -> Any:
            try:
                return await method(request, timeout=timeout)
            except grpc.aio.AioRpcError as e:
                if e.code() in RETRYABLE:
                    raise _Retryable(e) from e
                raise

        try:
            # Fast path: one attempt with no retry machinery; the policy only
            # comes in once logsvc has failed to answer.
            start = time.monotonic()
            try:
                return await attempt()
            except _Retryable:
                left = max(0.0, self._config.budget - (time.monotonic() - start))
                return await dataclasses.replace(self._retry, budget=left).run(attempt)
        except _Retryable as e:
            code = errno.EAGAIN if critical else UNREACHABLE_ERRNO
            event(log, logging.WARNING, "logsvc_unreachable", target=self.target, rpc=rpc,
                  status=e.error.code().name, detail=e.error.details(), errno=code)  # fmt: skip
            raise CallFailed(code, f"logsvc unreachable: {e.error.details()}") from None
        except grpc.aio.AioRpcError as e:
            raise CallFailed(errno_of(e.code()), e.details() or e.code().name) from None
