"""The message hub: participants hear what is said, and are loaded only when needed."""

from agentscope.message import Msg, TextBlock, UserMsg
from agentscope.state import AgentState

from app.engine.group import MessageHub
from app.engine.notes import hint


def _texts(state: AgentState) -> list[str]:
    return [msg.get_text_content() or "" for msg in state.context]


async def test_participants_are_loaded_when_needed_and_hear_everything_in_order() -> None:
    loaded: list[str] = []
    reads = 0
    earlier = AgentState()
    earlier.context.append(UserMsg(name="visitor", content="an earlier turn"))
    saved = {"sales": earlier}

    async def load(names: list[str]) -> dict[str, AgentState]:
        nonlocal reads
        reads += 1
        loaded.extend(names)
        return {name: saved.get(name) or AgentState() for name in names}

    hub = MessageHub(["chat", "sales", "support"], load, hint("the team"), states={})
    visitor = UserMsg(name="visitor", content="hello")
    hub.broadcast(visitor, exclude="chat")
    chat = await hub.state("chat")  # the one that replies
    assert loaded == ["chat"]
    reply = Msg(name="chat", role="assistant", content=[TextBlock(text="hi there")])
    hub.broadcast(reply, exclude="chat")
    assert loaded == ["chat"]  # the others hear it without being loaded

    states = await hub.load_all()
    assert sorted(loaded) == ["chat", "sales", "support"]
    assert reads == 2  # the one that replied, then the others together
    assert _texts(chat) == ["[Team note] the team"]
    # A new memory starts with the team's announcement; a saved one goes on from where it was.
    assert _texts(states["support"]) == ["[Team note] the team", "hello", "hi there"]
    assert _texts(states["sales"]) == ["an earlier turn", "hello", "hi there"]
    # Each participant holds its own copy of what it heard.
    assert states["support"].context[1] is not states["sales"].context[1]
    hub.tell("support", UserMsg(name="hub", content="later"))
    assert _texts(states["support"])[-1] == "later"
    assert "later" not in _texts(states["sales"])
