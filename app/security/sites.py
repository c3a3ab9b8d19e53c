"""Sites that may embed the chat: a public site key and the origins it is served from.

SITE_KEYS = {"<site key>": ["https://example.com", ...]}. While it is empty (the
default), the chat endpoints take turns from any origin with any site key or none, so
`python run.py` works out of the box. Once a site is registered, a turn needs a known
site key and an `Origin` among that key's origins, and CORS answers those origins only.
"""

from dataclasses import dataclass
from urllib.parse import urlsplit

from app.config import Settings
from app.errors import ApiError

DEFAULT_PORTS = {"http": 80, "https": 443}


def normalize_origin(origin: str) -> str:
    """`scheme://host[:port]` as a browser sends it in `Origin` (lower case, no
    default port, no path); `*` and `null` are kept as they are."""
    value = origin.strip().rstrip("/")
    if value in ("*", "null"):
        return value
    parts = urlsplit(value)
    try:
        port = parts.port
    except ValueError:
        return value.lower()
    if not parts.scheme or not parts.hostname:
        return value.lower()
    scheme = parts.scheme.lower()
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    suffix = f":{port}" if port is not None and port != DEFAULT_PORTS.get(scheme) else ""
    return f"{scheme}://{host}{suffix}"


@dataclass(frozen=True)
class SiteKeys:
    """The registered sites: site key -> allowed origins (normalized)."""

    sites: dict[str, frozenset[str]]

    @classmethod
    def from_settings(cls, settings: Settings) -> "SiteKeys":
        return cls(
            {
                key: frozenset(normalize_origin(o) for o in origins)
                for key, origins in settings.site_keys.items()
            }
        )

    @property
    def enabled(self) -> bool:
        return bool(self.sites)

    def check(self, site_key: str | None, origin: str | None) -> None:
        """Nothing when the site may start turns; else 403 `unknown_site_key` or
        `origin_not_allowed`."""
        if not self.enabled:
            return
        if not site_key:
            raise ApiError(
                403,
                "unknown_site_key",
                "This chat needs a site key: send the X-Site-Key header, `site_key` in the "
                "body's metadata or `?site_key=` (the widget's data-site-key).",
            )
        allowed = self.sites.get(site_key)
        if allowed is None:
            raise ApiError(
                403, "unknown_site_key", f"The site key {site_key[:64]!r} is not registered."
            )
        if "*" in allowed:
            return
        if not origin or normalize_origin(origin) not in allowed:
            shown = origin[:200] if origin else "(no Origin header)"
            raise ApiError(
                403,
                "origin_not_allowed",
                f"The origin {shown} may not use site key {site_key[:64]!r}; "
                "add it to that key's origins in SITE_KEYS.",
            )

    def origins(self) -> set[str]:
        return {origin for allowed in self.sites.values() for origin in allowed}


def cors_origins(settings: Settings) -> list[str]:
    """The origins CORS answers: CORS_ORIGINS, or, once sites are registered, their
    origins (plus any CORS_ORIGINS other than `*`)."""
    sites = SiteKeys.from_settings(settings)
    if not sites.enabled:
        return list(settings.cors_origins)
    origins = sites.origins() | {normalize_origin(o) for o in settings.cors_origins if o != "*"}
    return ["*"] if "*" in origins else sorted(origins)
