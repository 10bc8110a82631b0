"""
Tests for bearer-token validation and claims-based authorization, with
keys generated in the tests.
"""

import base64
import io
import json
import time
from typing import Any, Dict

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm
from twisted.logger import capturedLogs, formatEvent
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

from stellarouter.cli import main as cli
from stellarouter.common.models import ClaimRequirement as Claim
from stellarouter.config import ConfigError
from stellarouter.config.gateway import AuthConfig, parse_gateway_config
from stellarouter.gateway.auth import InvalidToken, TokenVerifier, bearer_token, unmet_requirement
from stellarouter.microservice import Microservice, RawResponse
from stellarouter.testing.harness import InMemoryDeployment

SECRET = "a-test-secret-of-32-characters!!"
ISSUER, AUDIENCE = "https://id.test", "billing"


def claims(**extra: Any) -> Dict[str, Any]:
    now = int(time.time())
    base = {"sub": "alice", "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 300}
    base.update(extra)
    return {k: v for k, v in base.items() if v is not None}


def hs256(secret: str = SECRET, **extra: Any) -> str:
    return jwt.encode(claims(**extra), secret, algorithm="HS256")


#: A JSON line that looks like one of the access log's.
FORGED_LINE = json.dumps({"time": "2026-12-03T17:45:40.000Z", "cid": "forged-0000",
                          "method": "DELETE", "path": "/invoices/inv-1", "status": 204})


def forged_header_token(**header: Any) -> str:
    """
    An unsigned token whose header is C{header}: the signature part is junk,
    what matters is the text the header puts into the verifier's reason.
    """
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
    return f"{b64(json.dumps(header).encode())}.e30.AAAA"


class RequirementTests(SynchronousTestCase):
    def test_table(self) -> None:
        """
        All requirements must hold; a tuple is any-of; no value means
        present; scope strings split on spaces; arrays match element-wise.
        """
        token = {"scope": "billing:read billing:write", "role": ["finance", "ops"],
                 "tenant": "acme", "level": 3, "admin": True}
        table = [
            ([Claim("scope", "billing:write")], None),
            ([Claim("scope", "billing")], Claim("scope", "billing")),
            ([Claim("role", "ops")], None),
            ([Claim("role", ("billing-admin", "finance"))], None),
            ([Claim("role", ("billing-admin", "root"))], Claim("role", ("billing-admin", "root"))),
            ([Claim("tenant")], None),
            ([Claim("missing")], Claim("missing")),
            ([Claim("tenant", "acme corp")], Claim("tenant", "acme corp")),
            ([Claim("level", "3"), Claim("admin", "true")], None),
            ([Claim("scope", "billing:read"), Claim("tenant", "other")], Claim("tenant", "other")),
            ([], None),
        ]
        for requirements, expected in table:
            self.assertEqual(unmet_requirement(token, requirements), expected, requirements)

    def test_bearer(self) -> None:
        """
        Only 'Bearer <token>' yields a token.
        """
        self.assertEqual(bearer_token(b"Bearer abc"), "abc")
        self.assertEqual(bearer_token(b"bearer  abc "), "abc")
        for raw in (None, b"", b"Basic abc", b"Bearer", b"Bearer   "):
            self.assertIsNone(bearer_token(raw))


class HmacVerifierTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.verifier = TokenVerifier(AuthConfig(issuer=ISSUER, audience=AUDIENCE,
                                                 hs256_secret=SECRET, leeway=0))

    def reason(self, token: str) -> str:
        return self.assertRaises(InvalidToken, self.verifier.verify, token).reason

    def test_valid(self) -> None:
        """
        A well-signed, current token for our issuer and audience is valid.
        """
        self.assertEqual(self.verifier.verify(hs256(scope="x"))["scope"], "x")

    def test_every_check(self) -> None:
        """
        Expired, not yet valid, wrong issuer, wrong audience, bad signature,
        missing exp and malformed tokens each fail with their reason.
        """
        now = int(time.time())
        self.assertIn("expired", self.reason(hs256(exp=now - 10)))
        self.assertIn("not yet valid", self.reason(hs256(nbf=now + 100)))
        self.assertIn("issuer", self.reason(hs256(iss="https://evil")))
        self.assertIn("audience", self.reason(hs256(aud="other")))
        self.assertIn("bad signature", self.reason(hs256(secret="x" * 32)))
        self.assertIn("'exp'", self.reason(hs256(exp=None)))
        self.assertIn("malformed", self.reason("not.a.token"))

    def test_untrusted_header_text_is_escaped_and_bounded(self) -> None:
        """
        Text the token's header chose (a C{crit} entry, an C{alg}, a C{kid})
        reaches the reason escaped and cut: one printable line, never a
        newline, a U+2028 or an ESC, however long the token.
        """
        forgeries = [
            forged_header_token(alg="HS256", crit=["x\n" + FORGED_LINE]),
            forged_header_token(alg="HS256", crit=["x\u2028\x1b[2J" + "y" * 5000]),
            forged_header_token(alg="HS\n256" + "z" * 5000),
            forged_header_token(alg="none\r\n" + FORGED_LINE),
        ]
        for token in forgeries:
            reason = self.reason(token)
            self.assertTrue(reason.isprintable(), reason)
            self.assertLess(len(reason), 400, reason)
        self.assertIn("x\\n{", self.reason(forgeries[0]))
        self.assertIn("x\\u2028\\x1b[2J", self.reason(forgeries[1]))

    def test_alg_none(self) -> None:
        """
        An unsigned token (alg none) is refused.
        """
        token = jwt.encode(claims(), None, algorithm="none")
        self.assertIn("'none' is not accepted", self.reason(token))


def jwks_of(*public_keys: Any) -> str:
    keys = []
    for kid, key in public_keys:
        if isinstance(key, rsa.RSAPublicKey):
            jwk = json.loads(RSAAlgorithm.to_jwk(key))
        elif isinstance(key, ec.EllipticCurvePublicKey):
            jwk = json.loads(ECAlgorithm.to_jwk(key))
        else:
            jwk = json.loads(OKPAlgorithm.to_jwk(key))
        jwk["kid"] = kid
        keys.append(jwk)
    return json.dumps({"keys": keys})


class AsymmetricVerifierTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.ed = ed25519.Ed25519PrivateKey.generate()
        self.verifier = TokenVerifier(AuthConfig(
            issuer=ISSUER, audience=AUDIENCE, leeway=0,
            jwks=jwks_of(("r1", self.rsa.public_key()), ("e1", self.ec.public_key()),
                         ("d1", self.ed.public_key()))))

    def test_each_key_type(self) -> None:
        """
        RS256, ES256 and EdDSA tokens verify against their JWKS keys.
        """
        for key, kid, alg in ((self.rsa, "r1", "RS256"), (self.ec, "e1", "ES256"),
                              (self.ed, "d1", "EdDSA")):
            token = jwt.encode(claims(), key, algorithm=alg, headers={"kid": kid})
            self.assertEqual(self.verifier.verify(token)["sub"], "alice", alg)

    def test_algorithm_confusion(self) -> None:
        """
        An HS256 token 'signed' with the RSA public key is refused, as is a
        token whose algorithm does not fit its key's type.
        """
        public_pem = self.rsa.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        forged = _hmac_token(public_pem)  # PyJWT itself refuses to sign this
        self.assertIn("no shared secret", self.assertRaises(
            InvalidToken, self.verifier.verify, forged).reason)
        mixed = jwt.encode(claims(), self.ec, algorithm="ES256", headers={"kid": "r1"})
        self.assertIn("does not match the RSA key", self.assertRaises(
            InvalidToken, self.verifier.verify, mixed).reason)

    def test_unknown_kid(self) -> None:
        """
        A token naming a key the gateway does not have is refused.
        """
        token = jwt.encode(claims(), self.rsa, algorithm="RS256", headers={"kid": "gone"})
        self.assertIn("unknown key id", self.assertRaises(
            InvalidToken, self.verifier.verify, token).reason)


def _hmac_token(key: bytes) -> str:
    """
    An HS256 token whose HMAC key is C{key}, built by hand.
    """
    import base64
    import hashlib
    import hmac

    def b64(data: bytes) -> bytes:
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    signing = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "r1"}).encode()) + b"." + b64(
        json.dumps(claims()).encode())
    return (signing + b"." + b64(hmac.new(key, signing, hashlib.sha256).digest())).decode()


class ConfigTests(SynchronousTestCase):
    def base(self, **auth: Any) -> Dict[str, Any]:
        return {"node": {"region": "eu1"}, "transports": [{"type": "tcp", "listen": "tcp:1"}],
                "auth": auth}

    def test_jwks_problems(self) -> None:
        """
        A JWKS with a private key, or that is not a JWKS, is a config error;
        a short secret too.
        """
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        private = json.loads(RSAAlgorithm.to_jwk(key))
        path = FilePath(self.mktemp())
        path.setContent(json.dumps({"keys": [private]}).encode())
        error = self.assertRaises(ConfigError, parse_gateway_config,
                                  self.base(jwks_file=path.path))
        self.assertIn("is a private key", str(error))
        path.setContent(b'{"nope": 1}')
        self.assertIn("is not a JWKS", str(self.assertRaises(
            ConfigError, parse_gateway_config, self.base(jwks_file=path.path))))
        self.assertIn("at least 32 bytes", str(self.assertRaises(
            ConfigError, parse_gateway_config, self.base(hs256_secret="short"))))


class GatewayAuthTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.deployment = InMemoryDeployment(auth=AuthConfig(
            issuer=ISSUER, audience=AUDIENCE, hs256_secret=SECRET))
        self.addCleanup(self.deployment.stop)
        self.app = Microservice("billing", "1.0.0")
        self.app.seen = []  # type: ignore[attr-defined]

        @self.app.endpoint("DELETE", "/invoices/{id}", claims=[Claim("scope", "billing:write")])
        def delete(ctx: Any) -> RawResponse:
            self.app.seen.append(dict(ctx.claims))  # type: ignore[attr-defined]
            return RawResponse(204)

        @self.app.endpoint("GET", "/open")
        def open_(ctx: Any) -> RawResponse:
            self.app.seen.append(dict(ctx.claims))  # type: ignore[attr-defined]
            return RawResponse.text("open")

        self.deployment.add(self.app)

    def call(self, method: str, path: str, token: Any = None) -> Any:
        headers = [("Authorization", f"Bearer {token}")] if token else []
        return self.deployment.request(method, path, headers=headers)

    def test_401_403_200(self) -> None:
        """
        No token → 401 Bearer; an invalid one → 401 saying only "invalid
        token"; a valid one without the claim → 403 naming it; with it →
        the handler runs and sees the verified claims.
        """
        response = self.call("DELETE", "/invoices/1")
        self.assertEqual((response.status, response.header("www-authenticate")), (401, "Bearer"))
        response = self.call("DELETE", "/invoices/1", hs256(exp=1))
        self.assertEqual(response.status, 401)
        self.assertEqual(json.loads(response.body)["detail"], "invalid token")
        self.assertEqual(response.header("www-authenticate"), 'Bearer error="invalid_token"')
        response = self.call("DELETE", "/invoices/1", hs256(scope="billing:read"))
        self.assertEqual(response.status, 403)
        self.assertIn("scope=billing:write", json.loads(response.body)["detail"])
        response = self.call("DELETE", "/invoices/1", hs256(scope="billing:read billing:write"))
        self.assertEqual(response.status, 204)
        self.assertEqual(self.app.seen[-1]["sub"], "alice")

    def test_forged_log_line_stays_in_one_line(self) -> None:
        """
        A token whose C{crit} header holds a newline and a fake access-log
        line (F1) gets 401 and writes one log line, with the newline shown
        escaped: nothing in the log starts a line of its own.
        """
        token = forged_header_token(alg="HS256", crit=["x\n" + FORGED_LINE + "\u2028\x1b[31m"])
        with capturedLogs() as events:
            response = self.call("GET", "/open", token)
        self.assertEqual(response.status, 401)
        lines = [formatEvent(e) for e in events if "forged-0000" in formatEvent(e)]
        self.assertEqual(len(lines), 1)
        self.assertIn("invalid token: malformed token:", lines[0])
        self.assertTrue(lines[0].isprintable(), lines[0])

    def test_anonymous_endpoints(self) -> None:
        """
        Endpoints without requirements stay anonymous (a valid token's claims
        are passed on) unless require_authentication is set.
        """
        self.assertEqual(self.call("GET", "/open").status, 200)
        self.assertEqual(self.app.seen[-1], {})
        self.assertEqual(self.call("GET", "/open", hs256(tenant="acme")).status, 200)
        self.assertEqual(self.app.seen[-1]["tenant"], "acme")
        gateway = self.deployment.gateway
        config = gateway.config
        gateway.apply_config(config.__class__(
            node=config.node, transports=config.transports,
            auth=AuthConfig(require_authentication=True, issuer=ISSUER, audience=AUDIENCE,
                            hs256_secret=SECRET)))
        self.assertEqual(self.call("GET", "/open").status, 401)
        self.assertEqual(self.call("GET", "/open", hs256()).status, 200)

    def test_key_rotation_by_reload(self) -> None:
        """
        A reloaded configuration with a new secret invalidates tokens of the
        old one at once.
        """
        token = hs256(scope="billing:write")
        self.assertEqual(self.call("DELETE", "/invoices/1", token).status, 204)
        gateway = self.deployment.gateway
        config = gateway.config
        gateway.apply_config(config.__class__(
            node=config.node, transports=config.transports,
            auth=AuthConfig(issuer=ISSUER, audience=AUDIENCE, hs256_secret="another-secret-0123456789abcdefgh")))
        self.assertEqual(self.call("DELETE", "/invoices/1", token).status, 401)

    def test_dev_token_command(self) -> None:
        """
        'stellarouter token' mints a token the gateway accepts.
        """
        out = io.StringIO()
        self.assertEqual(cli(["token", "--secret", SECRET, "--issuer", ISSUER, "--audience",
                              AUDIENCE, "--claim", "scope=billing:read",
                              "--claim", "scope=billing:write"], out), 0)
        token = out.getvalue().strip()
        self.assertEqual(self.call("DELETE", "/invoices/1", token).status, 204)
