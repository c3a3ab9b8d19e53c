"""What one participant of a workflow adds: the brief for its step, decided in code.

Like a chat turn's brief (`flow.Brief`), it goes to the offline engine as data and to a
model as a team note with a draft, so each participant speaks from its own field and
builds on what its colleagues said and sent it, whatever the model.
"""

from dataclasses import dataclass, field
from typing import Any

from app.agents import AGENTS


@dataclass
class Contribution:
    agent: str
    task: str  # the workflow's input
    workflow_type: str
    round: int = 1
    rounds: int = 1
    heard: list[tuple[str, str]] = field(default_factory=list)  # (colleague, what they said)
    # Messages sent to it (from, kind, content): the hub has told it; the offline engine
    # answers them.
    inbox: list[tuple[str, str, str]] = field(default_factory=list)

    def as_data(self) -> dict[str, Any]:
        return {
            "agent": self.agent,
            "contribution": {
                "task": self.task,
                "workflow_type": self.workflow_type,
                "round": self.round,
                "rounds": self.rounds,
                "heard": [list(pair) for pair in self.heard],
                "inbox": [list(item) for item in self.inbox],
            },
        }

    def as_note(self, draft: str) -> str:
        """The brief for a model: its part in the workflow, and a draft of it."""
        title = AGENTS[self.agent].title if self.agent in AGENTS else self.agent
        lines = ["[Team note, not from the visitor]"]
        if self.rounds > 1:
            lines.append(f"Round {self.round} of {self.rounds} of a team discussion.")
        lines.append(
            f"Add what {title.lower()} brings to the request, without repeating what your "
            "colleagues already said; build on their points."
        )
        lines.append(f'Your part must say what this draft says, in your own words: "{draft}"')
        lines.append("At most three short sentences.")
        return "\n".join(lines)
