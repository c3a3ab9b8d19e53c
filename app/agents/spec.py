"""What an agent is: a name, what it is for, its prompt, its tools, who it may hand to."""

from dataclasses import dataclass, field


@dataclass(frozen=True)
class AgentSpec:
    name: str
    description: str
    system_prompt: str
    tools: tuple[str, ...] = field(default_factory=tuple)
    handoffs: tuple[str, ...] = field(default_factory=tuple)
