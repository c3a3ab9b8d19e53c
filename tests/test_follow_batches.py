"""Following a run: a fast reply's tokens arrive in batches, a paced one token by token,
and either way every event arrives once, in order."""

import asyncio

from app.bus.memory import InProcessBus
from app.events import Event, MessageDelta, RunCompleted, RunStarted, Usage

RUN, CONVERSATION = "run-1", "conversation-1"


def _delta(seq: int) -> MessageDelta:
    return MessageDelta(
        run_id=RUN, conversation_id=CONVERSATION, seq=seq, message_id="m", delta=f"t{seq} "
    )


async def _follow_while_publishing(tokens: int, pause: float) -> list[list[Event]]:
    bus = InProcessBus()

    async def produce() -> None:
        await bus.publish(
            RunStarted(
                run_id=RUN, conversation_id=CONVERSATION, seq=1, message_id="u", message="hi"
            )
        )
        for seq in range(2, tokens + 2):
            await bus.publish(_delta(seq))
            await asyncio.sleep(pause)  # a model's pace (0: as fast as the loop goes)
        await bus.publish(
            RunCompleted(run_id=RUN, conversation_id=CONVERSATION, seq=tokens + 2, usage=Usage())
        )

    producer = asyncio.create_task(produce())
    batches = [batch async for batch in bus.follow(RUN)]
    await producer
    return batches


async def test_a_fast_reply_reaches_its_follower_in_batches() -> None:
    batches = await _follow_while_publishing(tokens=500, pause=0)
    assert [e.seq for batch in batches for e in batch] == list(range(1, 503))
    # One read per token would be 500 batches; the read window gathers them.
    assert len(batches) <= 100


async def test_a_paced_reply_reaches_its_follower_token_by_token() -> None:
    batches = await _follow_while_publishing(tokens=10, pause=0.03)
    assert [e.seq for batch in batches for e in batch] == list(range(1, 13))
    # Tokens 30 ms apart are not held for a window: (nearly) every one is read alone.
    assert sum(len(batch) == 1 for batch in batches) >= 8


async def test_a_follower_that_joins_late_gets_what_it_missed_at_once() -> None:
    bus = InProcessBus()
    for seq in range(1, 6):
        await bus.publish(_delta(seq))
    await bus.publish(RunCompleted(run_id=RUN, conversation_id=CONVERSATION, seq=6, usage=Usage()))
    batches = [batch async for batch in bus.follow(RUN, after_seq=2)]
    assert [[e.seq for e in batch] for batch in batches] == [[3, 4, 5, 6]]
