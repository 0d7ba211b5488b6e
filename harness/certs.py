"""Real X.509 certificates for the tests: a CA of their own, and server and client certificates it signs.

The TLS tests (gRPC between bridge and logsvc, Redis over TLS) need real
certificates with the identities the service reads from them (DNS names and
SPIFFE URIs in the subjectAltName, an organisation), and the rotation tests
need to re-issue one in place. They are made here, in a temporary directory,
with ECDSA P-256 keys: fast to generate, and what cert-manager issues by
default. Nothing here is fit for production: keys are unencrypted and the CA
lives next to what it signs.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["CertAuthority", "Issued"]


@dataclass(frozen=True)
class Issued:
    """A certificate and its key as PEM files, with the CA certificate that verifies it."""

    cert: Path
    key: Path
    ca: Path


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())  # fmt: skip
    # Written beside and renamed over, as kubelet and cert-manager rotate: a reader never sees half a key.
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(pem)
    os.chmod(tmp, 0o600)
    tmp.replace(path)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    tmp.replace(path)


class CertAuthority:
    """A self-signed CA in ``directory`` (``ca.crt``, ``ca.key``) that issues certificates beside it."""

    def __init__(self, directory: Path, name: str = "dmulog test CA"):
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        self._name = subject
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(subject).issuer_name(subject)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False),
                           critical=True)
            .sign(self._key, hashes.SHA256())
        )  # fmt: skip
        self.cert = directory / "ca.crt"
        _write_cert(self.cert, self._cert)
        _write_key(directory / "ca.key", self._key)

    def issue(
        self,
        name: str,
        *,
        dns: Sequence[str] = (),
        uris: Sequence[str] = (),
        ips: Sequence[str] = (),
        organization: str | None = None,
        server: bool = False,
        client: bool = True,
        valid_for: datetime.timedelta = datetime.timedelta(days=1),
        directory: Path | None = None,
    ) -> Issued:
        """Sign ``name.crt`` and ``name.key`` (common name ``name``); issuing the same name again replaces both.

        ``dns``, ``uris`` and ``ips`` go in the subjectAltName; ``server`` and
        ``client`` set the extended key usages (a server certificate of
        logsvc needs ``ips=["127.0.0.1"]`` or a DNS name the client dials).
        """
        where = directory or self.directory
        where.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        attrs = [x509.NameAttribute(NameOID.COMMON_NAME, name)]
        if organization is not None:
            attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
        sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        sans += [x509.UniformResourceIdentifier(u) for u in uris]
        sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if server else []) + (
            [ExtendedKeyUsageOID.CLIENT_AUTH] if client else [])  # fmt: skip
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attrs)).issuer_name(self._name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + valid_for)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        )  # fmt: skip
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        if usages:
            builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        issued = Issued(cert=where / f"{name}.crt", key=where / f"{name}.key", ca=self.cert)
        _write_key(issued.key, key)
        _write_cert(issued.cert, cert)
        return issued
