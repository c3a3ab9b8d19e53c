"""What an agent is: a name, what it is for, its prompt, its tools, who it may hand to."""

from dataclasses import dataclass, field
from functools import cached_property

TEAM_NOTE = (
    " You work in a team of assistants who share one conversation: earlier assistant "
    "messages may come from a colleague, so continue naturally from them. After each "
    "visitor message a team note tells you what the team knows, what it has just done and "
    "what to ask next: follow it, and never quote or mention it. The team records the "
    "visitor's details, updates the CRM and books calls, so you seldom need a tool. Never "
    "ask for something the visitor already said. Reply in one to three short sentences, "
    "in plain language."
)


@dataclass(frozen=True)
class AgentSpec:
    name: str
    title: str
    description: str
    system_prompt: str
    tools: tuple[str, ...] = field(default_factory=tuple)
    handoffs: tuple[str, ...] = field(default_factory=tuple)

    @cached_property  # one string for every turn's agent
    def prompt(self) -> str:
        return self.system_prompt + TEAM_NOTE
