"""
The one redaction rule for secrets, used wherever configuration reaches
text a person or a log collector reads: log lines, configuration diffs,
configuration errors, (later) the admin API.

Two kinds of secret:
 - a configuration field whose name says it is one (L{is_secret_key}:
   C{auth.hs256_secret}, any C{password}, C{passphrase}, C{*_secret},
   C{*_token}): its value is never shown, only whether it changed;
 - an address with a password in it (C{amqp:host=h:user=u:password=p},
   C{amqp://u:p@h/}): the password is replaced by C{***}
   (L{redact_text}, which also finds such addresses inside any message).
"""

from __future__ import annotations

import re

#: What a secret value is shown as.
REDACTED = "***"

_SECRET_NAMES = re.compile(r"(?:^|_)(?:secret|password|passwd|passphrase|token)$", re.I)
_SEGMENT = re.compile(r"\[\d+\]$")
#: C{password=VALUE} inside an endpoint-style string (C{:}-separated, with
#: C{\\:} escapes): the value runs to the next C{:key=} (a C{:} not
#: followed by one is taken as part of it: an unescaped colon in a password
#: would otherwise show the rest of it), and the password of a URL's user
#: information (up to its last C{@}: an unescaped C{@} in a password).
_KEY_VALUE = re.compile(r"(?i)\b(password|passwd|passphrase|secret|hs256_secret)="
                        r"((?:\\.|[^:\\\s'\",}]|:(?![a-z_]+=))*)")
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^:/@\s'\"]*):([^/\s'\"]*)@")


def is_secret_key(path: str) -> bool:
    """
    Whether the configuration key at C{path} (C{auth.hs256_secret},
    C{routers[0].password}) holds a secret: its last name is, or ends with,
    C{secret}, C{password}, C{passwd}, C{passphrase} or C{token}.
    """
    last = _SEGMENT.sub("", path.rsplit(".", 1)[-1])
    return bool(_SECRET_NAMES.search(last))


def redact_text(text: str) -> str:
    """
    C{text} with every password of an address in it replaced by C{***}.
    """
    if "=" not in text and "@" not in text:
        return text
    text = _KEY_VALUE.sub(lambda m: f"{m.group(1)}={REDACTED}", text)
    return _URL_USERINFO.sub(lambda m: f"{m.group(1)}:{REDACTED}@", text)


def redact(path: str, value: object) -> object:
    """
    The value of configuration key C{path} as it may be shown: C{***} for a
    secret field that is set, addresses with their passwords redacted, any
    other value unchanged.
    """
    if value is None:
        return None
    if is_secret_key(path):
        return REDACTED
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, tuple):
        return tuple(redact_text(v) if isinstance(v, str) else v for v in value)
    return value


__all__ = ["REDACTED", "is_secret_key", "redact", "redact_text"]
