"""The agents of the group, by name."""

from app.agents.chat import CHAT
from app.agents.spec import AgentSpec

AGENTS: dict[str, AgentSpec] = {spec.name: spec for spec in (CHAT,)}
DEFAULT_AGENT = CHAT.name

__all__ = ["AGENTS", "DEFAULT_AGENT", "AgentSpec"]
