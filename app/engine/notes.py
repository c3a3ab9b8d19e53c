"""What the hub says to the agents: notes from the team, and what one agent hears of
another's message."""

from agentscope.message import Msg, TextBlock, UserMsg


def text_only(msg: Msg) -> Msg | None:
    """What other participants hear of a message: its text, no tool or thinking blocks."""
    text = msg.get_text_content()
    if not text:
        return None
    return Msg(name=msg.name, role=msg.role, content=[TextBlock(text=text)])


def hint(text: str) -> Msg:
    """A note from the hub to the agents (never shown to the visitor)."""
    return UserMsg(name="hub", content=f"[Team note] {text}")


def heard(msg: Msg) -> Msg:
    """A participant's own copy of a message it hears: its own content list and metadata,
    which AgentScope may replace or extend in that participant's memory; the blocks are
    shared, as AgentScope shares them, since it never changes a block it did not write.
    (A deep copy, each message for each participant, was a tenth of a turn's work.)"""
    return msg.model_copy(update={"content": list(msg.content), "metadata": dict(msg.metadata)})
