"""What an agent is: a name, what it is for, its prompt, its tools, who it may hand to."""

from dataclasses import dataclass, field
from functools import cached_property

TEAM_NOTE = (
    " You work in a team of assistants who share one conversation: earlier assistant "
    "messages may come from a colleague, so continue naturally from them. Use `recall` "
    "to read what the team already knows and `remember` to note what the visitor tells "
    "you (budget, timeline, need, name, email, company). Never ask again for something "
    "the visitor already said. When another colleague fits the request better, call the "
    "matching transfer tool with a short reason instead of answering yourself."
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
