"""Self-signed TLS for the simulator, generated in memory with ``cryptography``.

``self_signed_ssl_context()`` gives a server ``SSLContext`` whose certificate is valid for the IP
127.0.0.1 and the name ``localhost`` (plus ``hostname`` if it is something else). Tests that
want a *verifying* client use ``SelfSignedCertificate.client_ssl_context()`` of the same
certificate; a client with default verification fails against it, which is the point of a
"bad certificate" test.
"""

from __future__ import annotations

from dataclasses import dataclass
import datetime as dt
import ipaddress
from pathlib import Path
import ssl
import tempfile

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class SelfSignedCertificate:
    """A certificate and its private key, both PEM encoded."""

    cert_pem: bytes
    key_pem: bytes

    def server_ssl_context(self) -> ssl.SSLContext:
        """A server context presenting this certificate."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        # load_cert_chain only reads files: write them to a private temp dir, gone right after.
        with tempfile.TemporaryDirectory(prefix="placeos-sim-tls-") as tmp:
            cert_path = Path(tmp) / "cert.pem"
            key_path = Path(tmp) / "key.pem"
            cert_path.write_bytes(self.cert_pem)
            key_path.write_bytes(self.key_pem)
            key_path.chmod(0o600)
            context.load_cert_chain(cert_path, key_path)
        return context

    def client_ssl_context(self) -> ssl.SSLContext:
        """A verifying client context that trusts exactly this certificate."""
        context = ssl.create_default_context(cadata=self.cert_pem.decode("ascii"))
        context.check_hostname = True
        return context


def generate_certificate(hostname: str = "127.0.0.1", days: int = 2) -> SelfSignedCertificate:
    """Create a self-signed certificate for 127.0.0.1, localhost and ``hostname``."""
    key = ec.generate_private_key(ec.SECP256R1())
    alt_names: list[x509.GeneralName] = [
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.DNSName("localhost"),
    ]
    try:
        address = ipaddress.ip_address(hostname)
    except ValueError:
        if hostname != "localhost":
            alt_names.append(x509.DNSName(hostname))
    else:
        if str(address) != "127.0.0.1":
            alt_names.append(x509.IPAddress(address))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        # Python 3.13 verifies with VERIFY_X509_STRICT: key identifiers and usages must be there.
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False
        )
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return SelfSignedCertificate(
        cert_pem=cert.public_bytes(serialization.Encoding.PEM),
        key_pem=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


def self_signed_ssl_context(hostname: str = "127.0.0.1") -> ssl.SSLContext:
    """A server ``SSLContext`` with a fresh self-signed certificate (see module docstring)."""
    return generate_certificate(hostname).server_ssl_context()
