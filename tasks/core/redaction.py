"""Keeping passwords out of everything a task prints, logs or raises.

URLs are rendered with SQLAlchemy's `hide_password`; free text (driver errors, Alembic output)
goes through `redact()`, which replaces every password this process has resolved. Environment
resolution registers each password it sees, so a message can never leak one it did not render.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING
from urllib.parse import quote, quote_plus

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

MASK = "***"
_secrets: set[str] = set()
# user:password@ in any URL-looking text, for passwords we were never told about.
# The scheme starts where a word starts and is short: matched from every position of a long
# word, an unbounded `[a-z0-9+.-]*` made redacting a 100 kB argument quadratic (minutes).
_USERINFO = re.compile(
    r"(?P<scheme>(?<![a-z0-9+.\-])[a-z][a-z0-9+.\-]{0,31}://)(?P<user>[^:/@\s]*):(?P<pw>[^@\s]+)@",
    re.I,
)
# Query parameters that carry a password: libpq (and so psycopg2) and the MySQL drivers take
# `?password=...` as well as `user:password@`; SQLAlchemy's hide_password masks only the latter.
SECRET_QUERY_KEYS = frozenset({"password", "passwd", "pwd", "sslpassword"})
_QUERY_SECRET = re.compile(
    r"(?P<key>(?<![a-z0-9_])(?:"
    + "|".join(sorted(SECRET_QUERY_KEYS))
    + r")=)(?P<value>[^&\s'\"]+)",
    re.I,
)


def register_secret(secret: str | None) -> None:
    """Remember a secret in every spelling it may appear in (raw and URL-quoted)."""
    if not secret or len(secret) < 2:
        return
    _secrets.update({secret, quote(secret, safe=""), quote_plus(secret)})


def register_url_secrets(url: URL) -> None:
    """Remember a URL's password, wherever in the URL it is given."""
    register_secret(url.password)
    for key, value in url.query.items():
        if key.lower() in SECRET_QUERY_KEYS:
            for item in (value,) if isinstance(value, str) else value:
                register_secret(item)


def redact(text: str) -> str:
    """Mask registered secrets, user:password@ userinfo and password=... parameters in `text`."""
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
    text = _QUERY_SECRET.sub(lambda m: f"{m['key']}{MASK}", text)
    for secret in sorted(_secrets, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def mask_url(url: URL) -> str:
    """The URL with its password masked, in the userinfo and in the query string."""
    rendered = url.render_as_string(hide_password=True)
    return _QUERY_SECRET.sub(lambda m: f"{m['key']}{MASK}", rendered)
