"""Which PostgreSQL and Redis the tests use: TEST_DATABASE_URL / TEST_REDIS_URL when set
(an empty value turns those tests off), else the local default when it answers on its
port, so that plain `pytest` on a machine running both tests against them too.

Read once, before the test modules import `tests.pg`; the choice goes into the
environment, where the servers the tests start find it as well.
"""

import os
import socket
from urllib.parse import urlsplit

DEFAULTS = {
    "TEST_DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/test",
    "TEST_REDIS_URL": "redis://127.0.0.1:6379/0",
}
WHAT = {"TEST_DATABASE_URL": "PostgreSQL", "TEST_REDIS_URL": "Redis"}


def _answers(url: str) -> bool:
    parts = urlsplit(url)
    try:
        socket.create_connection((parts.hostname, parts.port), timeout=0.5).close()
    except OSError:
        return False
    return True


def choose() -> list[str]:
    """Set each variable that is unset to its default where that answers; one line per
    service saying what the tests use, or why its tests skip."""
    lines = []
    for name, default in DEFAULTS.items():
        given = os.environ.get(name)
        if given:
            lines.append(f"{WHAT[name]}: {given} ({name})")
        elif given == "":
            lines.append(f"{WHAT[name]}: its tests skip ({name} is empty)")
        elif _answers(default):
            os.environ[name] = default
            lines.append(f"{WHAT[name]}: {default} (found on its default port)")
        else:
            lines.append(f"{WHAT[name]}: its tests skip (nothing answers at {default}; set {name})")
    return lines
