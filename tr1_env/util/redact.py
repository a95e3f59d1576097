"""Keep secrets out of everything tr1 prints or writes: exception text, configs, reports.

Keys come from the environment and are sent only to the server that needs them; but a vendor
library may put one in a URL (``?token=...``) and a user may put one in a base URL
(``http://user:pass@host/v1``), and both then reach error messages and saved settings.
"""

from __future__ import annotations

import base64
import re
from urllib.parse import unquote, urlsplit, urlunsplit

__all__ = ["redact_url", "scrub", "url_secrets"]

MASK = "***"
_QUERY_SECRET = re.compile(r"((?:token|api_key|apikey|key|access_token)=)[^&\s'\"<>]+", re.IGNORECASE)
_AUTH_HEADER = re.compile(r"\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]+")
_URL_CREDENTIALS = re.compile(r"(\b[a-z][a-z0-9+.-]*://)[^/\s@'\"<>]+@", re.IGNORECASE)


def redact_url(url: str | None) -> str | None:
    """The URL without its ``user:password@`` part and with secret query values masked."""
    if not url:
        return url
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{MASK}@{netloc.rpartition('@')[2]}"
    return _QUERY_SECRET.sub(rf"\g<1>{MASK}", urlunsplit(parts._replace(netloc=netloc)))


def url_secrets(url: str | None) -> list[str]:
    """The credentials a URL carries, in each form a server could echo them: the password, ``user:password``
    (or the user alone when it is a token) as typed and decoded, and the base64 of the Basic auth header."""
    parts = urlsplit(url or "")
    if parts.username is None:
        return []
    raw = parts.netloc.rpartition("@")[0]
    plain = unquote(raw)
    out = [raw, plain, base64.b64encode(plain.encode()).decode()]
    if parts.password is not None:
        out += [parts.password, unquote(parts.password)]
    return list(dict.fromkeys(out))


def scrub(text: str, *secrets: str | None) -> str:
    """``text`` with every given secret, URL credential, auth header value and ``token=`` query value masked."""
    for secret in secrets:
        if secret and len(secret) >= 4:  # masking "a" everywhere would garble the message, not protect a key
            text = text.replace(secret, MASK)
    text = _AUTH_HEADER.sub(rf"\g<1> {MASK}", _URL_CREDENTIALS.sub(rf"\g<1>{MASK}@", text))
    return _QUERY_SECRET.sub(rf"\g<1>{MASK}", text)
