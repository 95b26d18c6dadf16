"""Throwaway TLS credentials for the loopback deployment (:mod:`visualmixer.fl.deploy`).

:func:`throwaway_tls` makes, for one run, a private certificate authority and a server certificate
for 127.0.0.1 (an IP subjectAltName) signed by it, writes the CA certificate, the server certificate
and its private key into a new private folder (``tempfile.mkdtemp``: mode 0700, outside the run's
output folder, so the key never lands next to the results a user may publish; files mode 0600) and
removes the folder when the run ends. The CA's own private key is never written: it signs the one
server certificate in memory and is dropped, so nothing else can ever be issued under that CA.

The SuperLink and every SuperNode serve their APIs with that certificate; the SuperNodes, ``flwr
run`` and Flower's SuperExec/app processes trust only that CA. So the traffic between the run's
processes is encrypted, and a process that grabs one of the run's ports cannot pose as the SuperLink
or a SuperNode. TLS does not say who the *client* is: see ``docs/federated.md`` for what stays open.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from visualmixer.core.atomic import replace_atomically

__all__ = ["TLSFiles", "make_tls_files", "require_cryptography", "superlink_tls_args",
           "supernode_tls_args", "throwaway_tls"]

#: How long the throwaway certificates are valid (a run is stopped long before; clocks may be skewed).
_VALID = datetime.timedelta(days=2)


@dataclass(frozen=True)
class TLSFiles:
    """Where one run's TLS credentials lie (all inside ``folder``)."""

    folder: Path
    ca: Path  #: the run's CA certificate (PEM): what the clients trust
    cert: Path  #: the server certificate for the host (PEM)
    key: Path  #: the server certificate's private key (PEM, mode 0600)


def require_cryptography():
    """Import ``cryptography`` or raise ``MissingExtraError`` naming the ``fl`` extra."""
    from visualmixer.core.optional import require

    return require("cryptography", extra="fl", purpose="the federated run (TLS between its processes)")


def _credentials(host: str) -> tuple[bytes, bytes, bytes]:
    """PEM bytes of (CA certificate, server certificate for ``host``, server private key)."""
    require_cryptography()
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "visualmixer fl throwaway CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + _VALID)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False, key_agreement=False,
                                       key_cert_sign=True, crl_sign=True, encipher_only=False,
                                       decipher_only=False), critical=True)
          .add_extension(ca_ski, critical=False)
          .sign(ca_key, hashes.SHA256()))
    san = x509.IPAddress(ipaddress.ip_address(host))
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])).issuer_name(ca_name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + _VALID)
            .add_extension(x509.SubjectAlternativeName([san]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    key_pem = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return ca.public_bytes(pem), cert.public_bytes(pem), key_pem


def make_tls_files(folder: Path, host: str = "127.0.0.1") -> TLSFiles:
    """Write a new CA certificate, a server certificate for ``host`` and its key into ``folder``
    (which must exist and be private); the files are created mode 0600 and must not exist yet."""
    ca, cert, key = _credentials(host)
    folder = Path(folder)
    def write(name: str, data: bytes) -> Path:  # 0600, never over a file already there
        return replace_atomically(folder / name, data, mode=0o600, suffix=".tmp", exact_mode=True, overwrite=False)

    return TLSFiles(folder=folder, ca=write("ca.pem", ca), cert=write("server.pem", cert), key=write("server.key", key))


@contextlib.contextmanager
def throwaway_tls(host: str = "127.0.0.1") -> Iterator[TLSFiles]:
    """New credentials (:func:`make_tls_files`) in a new private folder, removed on exit."""
    folder = Path(tempfile.mkdtemp(prefix="visualmixer-fl-tls-"))  # mode 0700
    try:
        yield make_tls_files(folder, host)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def superlink_tls_args(tls: TLSFiles) -> list[str]:
    """``flower-superlink`` flags: serve the Fleet, Control and Runtime APIs over TLS."""
    return ["--ssl-ca-certfile", str(tls.ca), "--ssl-certfile", str(tls.cert), "--ssl-keyfile", str(tls.key)]


def supernode_tls_args(tls: TLSFiles) -> list[str]:
    """``flower-supernode`` flags: trust only the run's CA for the SuperLink, and serve the node's own
    Runtime API (where its ClientApp process connects) over TLS too."""
    return ["--root-certificates", str(tls.ca), *superlink_tls_args(tls)]
