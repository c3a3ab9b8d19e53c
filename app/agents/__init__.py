"""The agents of the group, by name."""

from app.agents.chat import CHAT
from app.agents.digital_marketing import DIGITAL_MARKETING
from app.agents.lead_qualification import LEAD_QUALIFICATION
from app.agents.spec import AgentSpec
from app.agents.web_development import WEB_DEVELOPMENT

AGENTS: dict[str, AgentSpec] = {
    spec.name: spec for spec in (CHAT, LEAD_QUALIFICATION, WEB_DEVELOPMENT, DIGITAL_MARKETING)
}
DEFAULT_AGENT = CHAT.name

__all__ = ["AGENTS", "DEFAULT_AGENT", "AgentSpec"]
