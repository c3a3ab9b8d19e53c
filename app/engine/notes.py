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
