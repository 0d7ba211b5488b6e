"""TLS material of a gRPC end (logsvc's server, the bridge's and ``dmulog status``'s client), re-read when it changes.

cert-manager, kubelet and SPIFFE agents rotate a certificate by replacing
its files in place (a Secret volume swaps a symlink). Both ends therefore
read the three PEM files again when any of them changes, and only once the
new certificate and key are known to belong together, so a rotation caught
half-way keeps the old pair instead of breaking every new handshake. The
server does this on each new connection (gRPC asks ``_Reloading.fetch``);
connections and streams already open keep the credentials they were made
with. The client side is in bridge/client.py (a new channel for new calls).
"""

from __future__ import annotations

import logging
import os
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dmulog.logs import event

if TYPE_CHECKING:  # the commands' option tables import this module; grpc only when credentials are made
    import grpc

__all__ = ["TlsFiles", "TlsWatch", "add_tls_options", "channel_credentials", "server_credentials", "tls_files"]

log = logging.getLogger("dmulog.tls")

RECHECK = 1.0
"""Seconds between two looks at the files from a client: a stat of three files per request would show."""


@dataclass(frozen=True)
class TlsFiles:
    """A certificate, its key, and the CA that verifies the other end: PEM files."""

    cert: Path
    key: Path
    ca: Path

    def stamp(self) -> tuple[tuple[int, int, int], ...]:
        """What changes when any file is replaced or rewritten (stat follows the Secret volume's symlinks)."""
        out = []
        for p in (self.cert, self.key, self.ca):
            st = os.stat(p)
            out.append((st.st_ino, st.st_size, st.st_mtime_ns))
        return tuple(out)

    def read(self) -> tuple[bytes, bytes, bytes]:
        """``(cert, key, ca)`` PEM bytes, once the certificate and key are known to be one pair.

        Raises ValueError naming the file when they are not, or when a file is
        not PEM: a clear error at start, and a kept old pair on a reload.
        """
        cert, key, ca = self.cert.read_bytes(), self.key.read_bytes(), self.ca.read_bytes()
        try:
            ssl.create_default_context().load_cert_chain(self.cert, self.key)
        except ssl.SSLError as e:
            raise ValueError(f"{self.cert} and {self.key} are not a certificate and its key ({e.reason})") from None
        try:
            ssl.create_default_context(cadata=ca.decode("ascii", "replace"))
        except (ssl.SSLError, ValueError) as e:
            raise ValueError(f"{self.ca} holds no PEM CA certificate ({e})") from None
        return cert, key, ca


class TlsWatch:
    """The files' current contents, read again when their stamp changes; a bad new set keeps the last good one."""

    def __init__(self, files: TlsFiles, recheck: float = 0.0):
        self.files = files
        self._recheck = recheck
        self._stamp = files.stamp()
        self.current = files.read()
        self.generation = 0
        """Counts the reloads: a client compares it to the one its channel was made with."""
        self._looked = time.monotonic()

    def poll(self) -> bool:
        """Whether the files changed to a good new set since the last call (then ``current`` holds it)."""
        now = time.monotonic()
        if now - self._looked < self._recheck:
            return False
        self._looked = now
        try:
            stamp = self.files.stamp()
            if stamp == self._stamp:
                return False
            contents = self.files.read()
        except (OSError, ValueError) as e:
            event(log, logging.WARNING, "tls_reload_failed", cert=str(self.files.cert), error=str(e),
                  consequence="the previous certificate stays in use")  # fmt: skip
            return False
        self._stamp, self.current = stamp, contents
        self.generation += 1
        event(log, logging.INFO, "tls_reloaded", cert=str(self.files.cert), generation=self.generation)
        return True


def server_credentials(files: TlsFiles) -> grpc.ServerCredentials:
    """Credentials that require a client certificate from ``files.ca`` and follow the files as they rotate."""
    import grpc

    watch = TlsWatch(files)

    def config() -> grpc.ServerCertificateConfiguration:
        cert, key, ca = watch.current
        return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)

    def fetch() -> grpc.ServerCertificateConfiguration | None:
        # gRPC calls this on every new connection; None keeps what it has.
        return config() if watch.poll() else None

    return grpc.dynamic_ssl_server_credentials(config(), fetch, require_client_authentication=True)


def channel_credentials(contents: tuple[bytes, bytes, bytes]) -> grpc.ChannelCredentials:
    """A client's credentials from ``TlsWatch.current``: its certificate, and the CA that must have signed logsvc's."""
    import grpc

    cert, key, ca = contents
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)


def add_tls_options(option: Callable[..., None], peer: str) -> None:
    """``--tls-cert``, ``--tls-key``, ``--tls-ca`` of a command; ``peer`` is what the CA must have signed."""
    option("--tls-cert", None, "PEM certificate of this end (with --tls-key and --tls-ca: TLS; re-read on change)")
    option("--tls-key", None, "PEM private key of --tls-cert")
    option("--tls-ca", None, f"PEM CA certificate(s) that {peer}'s certificate must be signed by")


def tls_files(args: Any, command: str) -> TlsFiles | None:
    """The files the three options name, or None for plaintext; ValueError when only some are given or unreadable."""
    given = {"--tls-cert": args.tls_cert, "--tls-key": args.tls_key, "--tls-ca": args.tls_ca}
    if not any(given.values()):
        return None
    missing = [flag for flag, value in given.items() if not value]
    if missing:
        raise ValueError(f"dmulog {command}: TLS needs --tls-cert, --tls-key and --tls-ca; "
                         f"missing {', '.join(missing)}")  # fmt: skip
    files = TlsFiles(Path(args.tls_cert), Path(args.tls_key), Path(args.tls_ca))
    try:
        files.read()
    except (OSError, ValueError) as e:
        raise ValueError(f"dmulog {command}: {e}") from None
    return files
