"""Conversation tokens: a visitor's proof that a conversation is theirs.

The token is an HMAC-SHA256 of the conversation id keyed by VISITOR_TOKEN_SECRET; it is
handed out with the conversation's first reply (and every later one) and asked for to
read, erase, continue, follow or stop that conversation. Without VISITOR_TOKEN_SECRET a
secret is generated once and kept in DATA_DIR, so tokens survive restarts.
"""

import base64
import hashlib
import hmac
import logging
import os
import secrets
from pathlib import Path

from app.config import Settings

log = logging.getLogger(__name__)

PREFIX = "ct1."
SECRET_FILE = "visitor_token_secret"


class VisitorTokens:
    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def issue(self, conversation_id: str) -> str:
        mac = hmac.new(
            self._secret, b"parley-conversation\x00" + conversation_id.encode(), hashlib.sha256
        ).digest()
        return PREFIX + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()

    def valid(self, token: str, conversation_id: str) -> bool:
        return hmac.compare_digest(token.encode(), self.issue(conversation_id).encode())


def load_secret(settings: Settings) -> bytes:
    """VISITOR_TOKEN_SECRET, else the one kept in DATA_DIR (made on first start)."""
    if settings.visitor_token_secret:
        return settings.visitor_token_secret.encode()
    path = settings.data_dir / SECRET_FILE
    try:
        return _read(path) or _create(path)
    except OSError as exc:
        log.warning(
            "cannot keep the visitor token secret in %s (%s): conversation tokens will not "
            "survive a restart; set VISITOR_TOKEN_SECRET",
            path,
            exc,
        )
        return secrets.token_bytes(32)


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes().strip() or None
    except FileNotFoundError:
        return None


def _create(path: Path) -> bytes:
    """Write a fresh secret; of several processes starting at once, the first wins."""
    path.parent.mkdir(parents=True, exist_ok=True)
    draft = path.with_name(f".{SECRET_FILE}.{os.getpid()}")
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(secrets.token_urlsafe(48))
    try:
        os.link(draft, path)  # atomic; fails when another process was first
    except FileExistsError:
        pass
    except OSError:  # a file system without hard links
        if not path.exists():
            os.replace(draft, path)
    finally:
        draft.unlink(missing_ok=True)
    secret = _read(path)
    if secret is None:
        raise OSError(f"{path} is empty")
    return secret
