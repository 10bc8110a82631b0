"""
Development certificates for mutual TLS: a CA, a gateway server
certificate and one client certificate per microservice, made with
C{cryptography}.  For trying mTLS in a minute (C{stellarouter certs init})
and for tests (any validity window, any CA).  Not a production PKI.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

Key = ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class Issued:
    """
    A private key and its certificate.
    """

    key: Key
    certificate: x509.Certificate

    def key_pem(self) -> bytes:
        return self.key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())

    def certificate_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def make_ca(name: str = "stellarouter development CA", days: int = 365) -> Issued:
    """
    A self-signed CA certificate.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = _now()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
        .sign(key, hashes.SHA256())
    )
    return Issued(key, certificate)


def issue(
    ca: Issued,
    common_name: str,
    dns_names: Sequence[str] = (),
    ip_addresses: Sequence[str] = (),
    days: int = 365,
    not_before: Optional[datetime.datetime] = None,
    not_after: Optional[datetime.datetime] = None,
) -> Issued:
    """
    A certificate signed by C{ca}, usable by a TLS server and a TLS client.

    @param dns_names: subject alternative names (the names a client
        verifies); C{common_name} is added when empty.
    @param not_before: start of validity (default: five minutes ago).
    @param not_after: end of validity (default: C{days} from now); set it in
        the past for an expired certificate.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    names: List[x509.GeneralName] = [x509.DNSName(n) for n in (dns_names or [common_name])]
    names += [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - datetime.timedelta(minutes=5))
        .not_valid_after(not_after or now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                              ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    return Issued(key, certificate)


def write(directory: str, name: str, issued: Issued) -> Tuple[str, str]:
    """
    Write C{name}.pem and C{name}.key (mode 0600) into C{directory}.

    @return: the certificate and key paths.
    """
    os.makedirs(directory, exist_ok=True)
    cert_path = os.path.join(directory, f"{name}.pem")
    key_path = os.path.join(directory, f"{name}.key")
    with open(cert_path, "wb") as f:
        f.write(issued.certificate_pem())
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(issued.key_pem())
    return cert_path, key_path


def init_dev_certs(directory: str, services: Sequence[str] = ("billing",),
                   gateway_names: Sequence[str] = ("localhost",)) -> Dict[str, str]:
    """
    A development CA, a gateway certificate (for C{gateway_names} and
    127.0.0.1) and one client certificate per service.

    @return: name → path of every file written.
    """
    ca = make_ca()
    paths: Dict[str, str] = {}
    paths["ca"], paths["ca-key"] = write(directory, "ca", ca)
    gateway = issue(ca, gateway_names[0], gateway_names, ["127.0.0.1"])
    paths["gateway"], paths["gateway-key"] = write(directory, "gateway", gateway)
    for service in services:
        paths[service], paths[f"{service}-key"] = write(directory, service, issue(ca, service))
    return paths
