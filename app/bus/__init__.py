"""Event fan-out: every consumer of a run reads the same log through a bus."""

from app.bus.base import Bus, ConversationLock
from app.bus.memory import InProcessBus
from app.config import Settings
from app.errors import BusUnavailable

__all__ = ["Bus", "BusUnavailable", "ConversationLock", "InProcessBus", "open_bus"]


async def open_bus(settings: Settings) -> Bus:
    """REDIS_URL: the Redis bus, shared by every replica; else the in-process bus."""
    if settings.redis_url:
        from app.bus.redis import RedisBus

        bus = RedisBus(
            settings.redis_url,
            prefix=settings.redis_prefix,
            stream_maxlen=settings.redis_stream_maxlen,
            ttl_seconds=settings.run_log_ttl_seconds,
            lock_ttl_seconds=settings.redis_lock_ttl_seconds,
        )
        await bus.open()
        return bus
    return InProcessBus(finished_ttl_seconds=settings.run_log_ttl_seconds)
