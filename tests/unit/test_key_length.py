"""
Keys too short for their algorithm (RFC 7518 section 3.2; NIST SP
800-131A): C{auth.hs256_secret} under 32 bytes and RSA keys under 2048 bits
are configuration errors, said once by C{stellarouter config check} and at
start-up; the verifier accepts an HMAC algorithm only when the secret is at
least its hash's size, so PyJWT never warns per request.
"""

from __future__ import annotations

import io
import json
import time
import warnings
from typing import Any, Dict, List

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

from stellarouter.cli import main as cli
from stellarouter.config import ConfigError
from stellarouter.config.gateway import AuthConfig, parse_gateway_config
from stellarouter.gateway.auth import InvalidToken, TokenVerifier

SECRET_31 = "s" * 31
SECRET_32 = "0123456789abcdef0123456789abcdef"
SECRET_64 = SECRET_32 * 2


def base(**auth: Any) -> Dict[str, Any]:
    return {"node": {"region": "eu1"}, "transports": [{"type": "tcp", "listen": "tcp:1"}],
            "auth": auth}


def token(secret: str, alg: str = "HS256") -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (minting short-key tokens on purpose)
        return jwt.encode({"sub": "alice", "exp": int(time.time()) + 300}, secret,
                          algorithm=alg)


class SecretLengthConfigTests(SynchronousTestCase):
    """
    C{auth.hs256_secret} is at least 32 bytes, checked up front.
    """

    def test_short_secret_refused(self) -> None:
        """
        A 31-byte secret is a configuration error naming the key and the
        rule, without the secret.
        """
        error = str(self.assertRaises(ConfigError, parse_gateway_config,
                                      base(hs256_secret=SECRET_31)))
        self.assertIn("auth.hs256_secret: must be at least 32 bytes (RFC 7518 section 3.2: "
                      "an HS256 key is at least as long as its 256-bit hash), not 31", error)
        self.assertNotIn(SECRET_31, error)

    def test_bytes_counted(self) -> None:
        """
        The length is counted in UTF-8 bytes, as the key is used: 32 bytes
        pass, whatever the characters.
        """
        self.assertEqual(parse_gateway_config(base(hs256_secret=SECRET_32)).auth.hs256_secret,
                         SECRET_32)
        self.assertEqual(parse_gateway_config(base(hs256_secret="é" * 16)).auth.hs256_secret,
                         "é" * 16)

    def test_config_check(self) -> None:
        """
        C{stellarouter config check} says it in one line and exits 1.
        """
        path = FilePath(self.mktemp())
        path.setContent(b"node: {region: eu1}\ntransports: [{type: tcp, listen: 'tcp:1'}]\n"
                        b"auth: {hs256_secret: '" + SECRET_31.encode() + b"'}\n")
        out = io.StringIO()
        self.assertEqual(cli(["config", "check", path.path], out), 1)
        self.assertIn("auth.hs256_secret: must be at least 32 bytes", out.getvalue())
        self.assertNotIn(SECRET_31, out.getvalue())

    def test_small_rsa_key_refused(self) -> None:
        """
        A JWKS holding an RSA key under 2048 bits is a configuration error.
        """
        key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
        public = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
        public["kid"] = "small"
        path = FilePath(self.mktemp())
        path.setContent(json.dumps({"keys": [public]}).encode())
        error = str(self.assertRaises(ConfigError, parse_gateway_config,
                                      base(jwks_file=path.path)))
        self.assertIn("keys[0] (kid 'small'): The RSA key is 1024 bits long", error)

    def test_dev_token_command(self) -> None:
        """
        C{stellarouter token --secret} refuses a secret the gateway would
        refuse, and mints no token.
        """
        out = io.StringIO()
        self.assertEqual(cli(["token", "--secret", SECRET_31], out), 2)
        self.assertEqual(out.getvalue(), "--secret: must be at least 32 bytes (RFC 7518 "
                                         "section 3.2: an HS256 key is at least as long as its "
                                         "256-bit hash), not 31\n")


class HmacAlgorithmTests(SynchronousTestCase):
    """
    An HMAC algorithm is accepted only with a secret at least its hash's
    size; PyJWT's per-token C{InsecureKeyLengthWarning} is never raised.
    """

    def setUp(self) -> None:
        self.caught: List[warnings.WarningMessage] = []
        context = warnings.catch_warnings(record=True)
        self.caught = context.__enter__()
        self.addCleanup(context.__exit__, None, None, None)
        warnings.simplefilter("always")

    def reason(self, verifier: TokenVerifier, value: str) -> str:
        return self.assertRaises(InvalidToken, verifier.verify, value).reason

    def test_32_byte_secret(self) -> None:
        """
        With 32 bytes: HS256 tokens pass; HS384 and HS512 ones are refused,
        naming the length they need; no warning.
        """
        verifier = TokenVerifier(AuthConfig(hs256_secret=SECRET_32))
        self.assertEqual(verifier.verify(token(SECRET_32))["sub"], "alice")
        self.assertEqual(self.reason(verifier, token(SECRET_32, "HS384")),
                         "HS384 needs a shared secret of at least 48 bytes (RFC 7518 section "
                         "3.2); auth.hs256_secret has 32")
        self.assertEqual(self.reason(verifier, token(SECRET_32, "HS512")),
                         "HS512 needs a shared secret of at least 64 bytes (RFC 7518 section "
                         "3.2); auth.hs256_secret has 32")
        self.assertEqual([str(w.message) for w in self.caught], [])

    def test_64_byte_secret(self) -> None:
        """
        With 64 bytes, all three HMAC algorithms pass, without a warning.
        """
        verifier = TokenVerifier(AuthConfig(hs256_secret=SECRET_64))
        for alg in ("HS256", "HS384", "HS512"):
            self.assertEqual(verifier.verify(token(SECRET_64, alg))["sub"], "alice", alg)
        self.assertEqual([str(w.message) for w in self.caught], [])

    def test_short_secret_given_directly(self) -> None:
        """
        A short secret that bypassed the configuration reader (an
        L{AuthConfig} built in code) validates no HMAC token, and nothing is
        warned, token after token.
        """
        verifier = TokenVerifier(AuthConfig(hs256_secret=SECRET_31))
        for _ in range(3):
            self.assertEqual(self.reason(verifier, token(SECRET_31)),
                             "HS256 needs a shared secret of at least 32 bytes (RFC 7518 "
                             "section 3.2); auth.hs256_secret has 31")
        self.assertEqual([str(w.message) for w in self.caught], [])
