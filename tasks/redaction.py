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
_USERINFO = re.compile(
    r"(?P<scheme>[a-z][a-z0-9+.\-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@\s]+)@", re.I
)


def register_secret(secret: str | None) -> None:
    """Remember a secret in every spelling it may appear in (raw and URL-quoted)."""
    if not secret or len(secret) < 2:
        return
    _secrets.update({secret, quote(secret, safe=""), quote_plus(secret)})


def redact(text: str) -> str:
    """Mask registered secrets and any user:password@ userinfo in `text`."""
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
    for secret in sorted(_secrets, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def mask_url(url: URL) -> str:
    return url.render_as_string(hide_password=True)
