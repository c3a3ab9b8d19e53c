"""Text every store can hold and a person can see: the checks every door shares.

Postgres keeps text and JSON in UTF-8 and has no room for a NUL character (U+0000) in
either; a lone surrogate (U+D800 to U+DFFF, which a JSON `\\ud800` escape yields) is not
UTF-8 at all. SQLite would store both, so the same request would work on one store and
fail with a 500 on another: they are refused before any store sees them, anywhere in a
request body, with the place named.

The input models that reach the store derive from `StorableInput`; `is_blank` tells a
message with nothing visible in it (only spaces, zero-width and other invisible
characters) from one worth a turn.
"""

import functools
import json
import re
from collections.abc import Iterator
from typing import Any, ClassVar

from pydantic import BaseModel, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from app.config import Settings
from app.errors import ApiError

Path = tuple[str | int, ...]

UNSTORABLE = re.compile("[\x00\ud800-\udfff]")

# Characters that show nothing: format characters (zero-width space, joiners, marks of
# direction, word joiner, BOM, soft hyphen, invisible operators, tags), controls, and a
# few letters drawn blank (Hangul fillers, the braille blank). Whitespace is stripped too.
_INVISIBLE_RANGES = [
    (0x00, 0x1F),
    (0x7F, 0x9F),
    (0xAD, 0xAD),
    (0x34F, 0x34F),
    (0x61C, 0x61C),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x206F),
    (0x2800, 0x2800),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0),
    (0xE0000, 0xE007F),
]
_DROP_INVISIBLE = {code: None for low, high in _INVISIBLE_RANGES for code in range(low, high + 1)}

UNSTORABLE_TEXT = "unstorable_text"


def is_blank(text: str) -> bool:
    """Whether the text shows nothing once whitespace and invisible characters go."""
    return not text.translate(_DROP_INVISIBLE).strip()


def describe_unstorable(char: str) -> str:
    if char == "\x00":
        return "a NUL character (U+0000)"
    return f"a lone surrogate (U+{ord(char):04X})"


def _walk(value: Any) -> Iterator[tuple[Path, str, bool]]:
    """Every string in a JSON-like value with its path, and whether it is a key; a
    stack rather than recursion, as bodies may nest deeply."""
    stack: list[tuple[Path, Any]] = [((), value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str):
            yield path, item, False
        elif isinstance(item, dict):
            for key, child in reversed(item.items()):
                if isinstance(key, str):
                    yield path, key, True
                stack.append(((*path, key), child))
        elif isinstance(item, list | tuple):
            stack.extend(((*path, i), child) for i, child in reversed(list(enumerate(item))))


def unstorable(value: Any) -> tuple[Path, str] | None:
    """Where the first text no store can hold is in the value, and why; else None."""
    for path, text, is_key in _walk(value):
        found = UNSTORABLE.search(text)
        if found is not None:
            what = describe_unstorable(found.group())
            where = "has a key that contains" if is_key else "contains"
            return path, f"{where} {what}, which cannot be stored; remove it"
    return None


@functools.cache
def max_metadata_bytes() -> int:
    """MAX_METADATA_BYTES, read once like the process's other settings (input models
    are checked before any request handler sees the app's)."""
    return Settings().max_metadata_bytes


def json_size(value: Any) -> int:
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    return len(text.encode("utf-8", "surrogatepass"))


def check_metadata_size(data: dict[str, Any], fields: tuple[str, ...]) -> None:
    """A 413 `metadata_too_large` when the fields kept with a conversation take more
    than MAX_METADATA_BYTES of JSON together."""
    limit = max_metadata_bytes()
    present = [name for name in fields if data.get(name) is not None]
    if not limit or not present:
        return
    size = json_size([data[name] for name in present])
    if size > limit:
        raise ApiError(
            413,
            "metadata_too_large",
            f"{' + '.join(present)}: {size} bytes as JSON, over the limit of {limit} "
            "(MAX_METADATA_BYTES) kept with a conversation; send less.",
        )


class StorableInput(BaseModel):
    """An input model whose values reach the store: text no store can hold is refused
    wherever it is in the input (a 422 naming the place), and the fields kept as the
    conversation's metadata (`metadata_fields`, by their names in the input) are held
    to MAX_METADATA_BYTES (a 413)."""

    metadata_fields: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="before")
    @classmethod
    def _storable(cls, data: Any) -> Any:
        found = unstorable(data)
        if found is not None:
            path, problem = found
            error = InitErrorDetails(
                type=PydanticCustomError(UNSTORABLE_TEXT, problem),
                loc=path,
                input=data,
            )
            raise ValidationError.from_exception_data(cls.__name__, [error])
        if isinstance(data, dict) and cls.metadata_fields:
            check_metadata_size(data, cls.metadata_fields)
        return data


def checked_message(text: str, max_chars: int) -> str:
    """The message as sent, or a 4xx that says what is wrong with it."""
    if is_blank(text):
        raise ApiError(422, "empty_message", "The message is empty: it has no visible characters.")
    if len(text) > max_chars:
        raise ApiError(
            413,
            "message_too_long",
            f"The message has {len(text)} characters; the limit is {max_chars}.",
        )
    return text
