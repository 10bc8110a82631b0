"""
Tests for L{stellarouter.transports.tls.certificate_names}: the identity a
peer certificate gives, as logged and matched.
"""

import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.trial.unittest import SynchronousTestCase

from stellarouter.transports.tls import certificate_names


def certificate(common_name: str, *dns_names: str) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime(2026, 1, 1)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
               .public_key(key.public_key()).serial_number(1)
               .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1)))
    if dns_names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in dns_names]), critical=False)
    return builder.sign(key, hashes.SHA256())


class CertificateNamesTests(SynchronousTestCase):
    def test_names(self) -> None:
        """
        The common name, then the DNS names not already given.
        """
        self.assertEqual(certificate_names(certificate("billing", "billing", "b.example")),
                         ("billing", "b.example"))
        self.assertEqual(certificate_names(None), ())

    def test_control_characters_escaped(self) -> None:
        """
        A name holding a newline or ESC (a CA may sign anything) is kept
        escaped, so every log line and table that shows it stays one line.
        """
        names = certificate_names(certificate('evil\n\t{"cid":"x"}\x1b[2J', "ok"))
        self.assertEqual(names, ('evil\\n\\t{"cid":"x"}\\x1b[2J', "ok"))
