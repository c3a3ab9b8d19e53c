"""Retention: with RETENTION_DAYS set, what is older is purged every hour.

What goes is what `Store.purge_older_than` says: run events (each run's ending is
kept), tool logs, finished webhook deliveries, and conversations idle for that long
with everything derived from them. RETENTION_DAYS=0 keeps everything.
"""

import asyncio
import logging
import time

from app.errors import StoreUnavailable
from app.store.base import Store

log = logging.getLogger(__name__)

INTERVAL_SECONDS = 3600.0
DAY = 86_400.0


async def purge_expired(store: Store, days: float) -> dict[str, int]:
    """Purge what is older than `days` days now; the counts of what went."""
    return await store.purge_older_than(time.time() - days * DAY)


async def keep_purging(store: Store, days: float, interval: float = INTERVAL_SECONDS) -> None:
    """Purge now and then every `interval` seconds, until cancelled."""
    while True:
        try:
            purged = await purge_expired(store, days)
            if any(purged.values()):
                log.info("retention (%g days) purged %s", days, purged)
        except StoreUnavailable as exc:
            log.warning("retention purge skipped, the store is unavailable: %s", exc)
        except Exception:
            log.exception("retention purge failed")
        await asyncio.sleep(interval)


def start_retention(store: Store, days: float) -> asyncio.Task[None] | None:
    """The background purge task, or None when RETENTION_DAYS is 0."""
    if days <= 0:
        return None
    return asyncio.create_task(keep_purging(store, days), name="retention")
