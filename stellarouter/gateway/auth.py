"""
Authentication and claims-based authorization (spec section 6.2).

 - L{TokenVerifier} validates a bearer JWT with PyJWT: signature, C{exp}
   (required), C{nbf}, C{iss}, C{aud}.  The algorithms allowed for a token
   come from the key that verifies it, never from the token: HMAC only with
   the configured shared secret, RS/PS with RSA keys, ES with EC keys,
   EdDSA with OKP keys.  C{alg: none} is never accepted.
 - L{unmet_requirement} is the pure authorization rule: every requirement
   must hold; a requirement with a tuple of values is any-of; a requirement
   without a value means "claim present"; C{scope}/C{scp} strings are split
   on ASCII spaces only and array claims are matched element by element.
"""

from __future__ import annotations

import json
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

import jwt
from jwt import PyJWK, PyJWKSet

from ..common.jsonvalue import JSONValue
from ..common.models import ClaimRequirement
from ..common.untrusted import quoted, shown
from ..config.gateway import AuthConfig

_HMAC = ["HS256", "HS384", "HS512"]
#: The shortest shared secret (bytes) of each HMAC algorithm: its hash's
#: size (RFC 7518 section 3.2).  C{auth.hs256_secret} is at least the first
#: (the configuration says so); a token of an algorithm the secret is too
#: short for is refused, never verified with a weak key.
_HMAC_MIN_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}
_BY_KTY = {
    "RSA": ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"],
    "EC": ["ES256", "ES384", "ES512"],
    "OKP": ["EdDSA"],
}
#: The longest token looked at (characters): one HTTP header line's worth.
#: Longer ones are refused unparsed.
MAX_TOKEN_CHARS = 16384
#: Claims whose string value is a space-separated list.
_SPACE_SEPARATED = frozenset({"scope", "scp"})


class InvalidToken(Exception):
    """
    A token failed validation.

    @ivar reason: which check failed, for the log (the client is only told
        "invalid token").  Every part taken from the token is passed
        through L{shown}: the reason is one printable line of bounded
        length, whatever the token holds.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TokenVerifier:
    """
    Validates bearer tokens against the configured keys.
    """

    def __init__(self, config: AuthConfig) -> None:
        """
        @raise ValueError: a JWKS the crypto backend cannot load.
        """
        self.config = config
        secret = (config.hs256_secret or "").encode("utf-8")
        self._secret_bytes = len(secret)
        #: The HMAC algorithms the secret is long enough for.
        self._hmac = [alg for alg in _HMAC if len(secret) >= _HMAC_MIN_BYTES[alg]]
        self._keys: Dict[Optional[str], PyJWK] = {}
        if config.jwks:
            for key in PyJWKSet.from_dict(json.loads(config.jwks)).keys:
                self._keys[key.key_id] = key

    def verify(self, token: str) -> Dict[str, JSONValue]:
        """
        Validate C{token} and return its claims.

        @raise InvalidToken: saying which check failed.
        """
        if len(token) > MAX_TOKEN_CHARS:
            # Refused before any base64 or JSON decoding.
            raise InvalidToken(f"token too long ({len(token)} characters; at most "
                               f"{MAX_TOKEN_CHARS})")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as e:
            raise InvalidToken(f"malformed token: {shown(e)}") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg.lower() == "none":
            raise InvalidToken(f"algorithm {quoted(alg)} is not accepted")
        if alg in _HMAC:
            if not self.config.hs256_secret:
                raise InvalidToken(f"{alg} token but no shared secret is configured")
            if alg not in self._hmac:
                raise InvalidToken(
                    f"{alg} needs a shared secret of at least {_HMAC_MIN_BYTES[alg]} bytes "
                    f"(RFC 7518 section 3.2); auth.hs256_secret has {self._secret_bytes}")
            key: Any = self.config.hs256_secret
            allowed = self._hmac
        else:
            jwk = self._key_for(header.get("kid"))
            allowed = _BY_KTY.get(jwk.key_type or "", [])
            if alg not in allowed:
                raise InvalidToken(
                    f"algorithm {quoted(alg)} does not match the {jwk.key_type} key "
                    f"{jwk.key_id!r} (allowed: {', '.join(allowed)})")
            key = jwk.key
        # enforce_minimum_key_length: a key under PyJWT's minimum is an
        # invalid token, not a warning per token (the configuration refuses
        # such keys up front; this covers a config built in code).
        options = {"require": ["exp"], "verify_aud": self.config.audience is not None,
                   "verify_iss": self.config.issuer is not None,
                   "enforce_minimum_key_length": True}
        try:
            claims = jwt.decode(
                token, key, algorithms=allowed, audience=self.config.audience,
                issuer=self.config.issuer, leeway=self.config.leeway,
                options=options,  # type: ignore[arg-type]
            )
        except jwt.ExpiredSignatureError:
            raise InvalidToken("token expired (exp)") from None
        except jwt.ImmatureSignatureError:
            raise InvalidToken("token not yet valid (nbf)") from None
        except jwt.InvalidIssuerError:
            raise InvalidToken("wrong issuer (iss)") from None
        except jwt.InvalidAudienceError:
            raise InvalidToken("wrong audience (aud)") from None
        except jwt.InvalidSignatureError:
            raise InvalidToken("bad signature") from None
        except jwt.MissingRequiredClaimError as e:
            raise InvalidToken(f"missing required claim {e.claim!r}") from None
        except jwt.PyJWTError as e:
            raise InvalidToken(f"invalid token: {shown(e)}") from None
        if not isinstance(claims, dict):
            raise InvalidToken("the token's payload is not a JSON object")
        return claims

    def _key_for(self, kid: object) -> PyJWK:
        if not self._keys:
            raise InvalidToken("asymmetric token but no JWKS is configured")
        if isinstance(kid, str) and kid in self._keys:
            return self._keys[kid]
        if kid is None and len(self._keys) == 1:
            return next(iter(self._keys.values()))
        raise InvalidToken(f"unknown key id {quoted(kid)}")


def bearer_token(authorization: Optional[bytes]) -> Optional[str]:
    """
    The token of an C{Authorization: Bearer <token>} header, or C{None}.
    """
    if not authorization:
        return None
    scheme, _, token = authorization.decode("latin-1").strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _elements(name: str, value: JSONValue) -> List[str]:
    if isinstance(value, list):
        return [v if isinstance(v, str) else json.dumps(v) for v in value]
    if isinstance(value, str):
        # RFC 6749 section 3.3 / RFC 8693: scope tokens are separated by
        # ASCII space (%x20) only; str.split() would also split on tabs,
        # newlines and Unicode spaces (a no-break space is part of a token).
        return [v for v in value.split(" ") if v] if name in _SPACE_SEPARATED else [value]
    return [json.dumps(value)]


def satisfied(claims: Mapping[str, JSONValue], requirement: ClaimRequirement) -> bool:
    """
    Whether the claims meet one requirement.
    """
    if requirement.type not in claims:
        return False
    if requirement.value is None:
        return True
    wanted: Sequence[str] = (requirement.value if isinstance(requirement.value, tuple)
                             else (requirement.value,))
    have = _elements(requirement.type, claims[requirement.type])
    return any(w in have for w in wanted)


def unmet_requirement(
    claims: Mapping[str, JSONValue], requirements: Iterable[ClaimRequirement]
) -> Optional[ClaimRequirement]:
    """
    The first requirement the claims do not meet, or C{None} if all hold.
    """
    for requirement in requirements:
        if not satisfied(claims, requirement):
            return requirement
    return None


def describe(requirement: ClaimRequirement) -> str:
    """
    A requirement as shown to a client: C{scope=billing:write},
    C{role in (admin, finance)}, C{tenant present}.
    """
    if requirement.value is None:
        return f"{requirement.type} present"
    if isinstance(requirement.value, tuple):
        return f"{requirement.type} in ({', '.join(requirement.value)})"
    return f"{requirement.type}={requirement.value}"
