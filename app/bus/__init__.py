"""Event fan-out: every consumer of a run reads the same log through a bus."""

from app.bus.base import Bus
from app.bus.memory import InProcessBus

__all__ = ["Bus", "InProcessBus"]
