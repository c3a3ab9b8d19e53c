"""Logs: text for humans (the default) or one JSON object per line (LOG_FORMAT=json).

Every line carries the ids of what it is about (`request_id`, `run_id`,
`conversation_id`, see `context`), and e-mail addresses and phone numbers in it are
masked (LOG_REDACT_PII=true, the default): visitors type them into the chat, and
logs travel further than the database. Tokens a URL carries (`?conversation_token=`,
the live view's `?token=`) are always replaced by `[redacted]`: an access log line
must not be a key to a conversation.

`logging_config(settings)` is a `logging.config.dictConfig` dict for the server's own
loggers, the root logger and uvicorn's; `run.py` hands it to uvicorn, which applies it
in every worker process.
"""

import json
import logging
import logging.config
import re
from datetime import UTC, datetime
from typing import Any

from app.config import Settings
from app.events import RunFinished
from app.observability import context

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s%(ids)s"

EMAIL = re.compile(r"\b([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)\b")
# Digits with the separators people write phone numbers with; `_mask_phone` keeps only
# what has the shape of one (9-15 digits, written with +, brackets, spaces or dashes).
PHONE = re.compile(r"(?<![\w.:/#-])\+?\(?\d[\d ().-]{6,}\d(?![\w/:])")
DATE_TIME = re.compile(r"\d{4}-\d{2}-\d{2}([ T]\d{1,2})?")
# The query parameters that carry a credential, and their values up to the next one.
SECRET_PARAMS = ("conversation_token", "token")
SECRET_QUERY = re.compile(rf"([?&;](?:{'|'.join(SECRET_PARAMS)})=)[^&;#\s\"']*", re.IGNORECASE)
REDACTED = "[redacted]"


def _mask_email(match: re.Match[str]) -> str:
    return f"{match.group(1)}***@{match.group(2)}"


def _mask_phone(match: re.Match[str]) -> str:
    text = match.group(0)
    digits = [c for c in text if c.isdigit()]
    if not 9 <= len(digits) <= 15 or DATE_TIME.fullmatch(text.strip()):
        return text  # too short or too long for a phone number, or a date
    if not (text.startswith("+") or any(c in text for c in " ()-")):
        return text  # a bare number (an id, a timestamp) or a dotted one (an address)
    return "***" + "".join(digits[-2:])


def redact(text: str) -> str:
    """The text with e-mail addresses (`d***@example.com`) and phone numbers (`***67`)
    masked."""
    if "@" in text:
        text = EMAIL.sub(_mask_email, text)
    return PHONE.sub(_mask_phone, text)


def redact_secrets(text: str) -> str:
    """The text with the values of credential query parameters replaced by `[redacted]`."""
    return SECRET_QUERY.sub(rf"\g<1>{REDACTED}", text)


class Rewrite(logging.Filter):
    """Rewrites the message and its traceback with `rewrite`."""

    @staticmethod
    def rewrite(text: str) -> str:
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        rewritten = self.rewrite(message)
        if rewritten != message:
            record.msg, record.args = rewritten, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.rewrite(record.exc_text)
        return True


class RedactSecrets(Rewrite):
    """Replaces the tokens URLs carry (uvicorn's access lines hold each request's path
    with its query)."""

    rewrite = staticmethod(redact_secrets)


class RedactPII(Rewrite):
    """Masks e-mail addresses and phone numbers in the message and its traceback."""

    rewrite = staticmethod(redact)


class AddContext(logging.Filter):
    """Puts the request, run and conversation ids of the current context on the record
    (`ids` holds them as text for the text format)."""

    def filter(self, record: logging.LogRecord) -> bool:
        ids = context.current()
        for name, value in ids.items():
            if getattr(record, name, None) is None:
                setattr(record, name, value)
        record.ids = "".join(f" {name}={value}" for name, value in ids.items())
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, the ids, and exc."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in ("request_id", "run_id", "conversation_id"):
            if (value := getattr(record, name, None)) is not None:
                line[name] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exc"] = record.exc_text
        return json.dumps(line, ensure_ascii=False, default=str)


def logging_config(settings: Settings) -> dict[str, Any]:
    """The dictConfig of every logger the server writes to (stderr)."""
    level = settings.log_level.upper()
    filters = ["context", "secrets", *(["redact"] if settings.log_redact_pii else [])]
    formatter = {"()": JsonFormatter} if settings.log_format == "json" else {"format": TEXT_FORMAT}
    handler = {
        "class": "logging.StreamHandler",
        "stream": "ext://sys.stderr",
        "formatter": "default",
        "filters": filters,
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {
            "context": {"()": AddContext},
            "secrets": {"()": RedactSecrets},
            "redact": {"()": RedactPII},
        },
        "formatters": {"default": formatter},
        "handlers": {"default": handler},
        "loggers": {
            "uvicorn": {"handlers": ["default"], "level": level, "propagate": False},
            "uvicorn.error": {"level": level},
            "uvicorn.access": {"handlers": ["default"], "level": level, "propagate": False},
        },
        "root": {"handlers": ["default"], "level": level},
    }


def configure_logging(settings: Settings) -> None:
    logging.config.dictConfig(logging_config(settings))


run_log = logging.getLogger("app.runs")


def log_finished_run(run: RunFinished) -> None:
    """A run-manager listener: one line per finished run (in the run's log context)."""
    run_log.info(
        "run %s %s%s: %d output tokens, first token %s ms, %s ms",
        run.run_id,
        run.status,
        f" ({run.error.code})" if run.error is not None else "",
        run.usage.output_tokens,
        run.usage.first_token_ms,
        run.duration_ms,
    )
