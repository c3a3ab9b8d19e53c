"""Proof that an email address a visitor gives is theirs: a six-digit code sent to it once,
with a fixed text, and typed back in the chat.

Until then the address receives nothing else from the server (no proposal, no calendar
invitation, no CRM contact that could trigger the CRM's own mail), so the chat cannot be
used to send mail to a third party. The code is derived from the server's secret, the
conversation and the address: nothing secret is stored, and a code for one conversation
or address is worth nothing for another.
"""

import hashlib
import hmac
import re

CODE = re.compile(r"(?<![\d-])(\d{3})[ -]?(\d{3})(?![\d-])")
MAX_ATTEMPTS = 5  # wrong codes accepted per conversation before the chat stops checking


def email_code(secret: bytes, conversation_id: str, email: str) -> str:
    """The six digits that confirm `email` in this conversation."""
    message = f"parley-email-code\x00{conversation_id}\x00{email.strip().casefold()}"
    digest = hmac.new(secret, message.encode(), hashlib.sha256).digest()
    return f"{int.from_bytes(digest[:8], 'big') % 1_000_000:06d}"


def typed_code(message: str) -> str | None:
    """A six-digit code in the message ('123456' or '123 456'), if any."""
    match = CODE.search(message)
    return match.group(1) + match.group(2) if match else None


def code_matches(secret: bytes, conversation_id: str, email: str, typed: str) -> bool:
    return hmac.compare_digest(email_code(secret, conversation_id, email), typed)
