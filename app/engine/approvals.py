"""Operator approval of tool calls, through AgentScope's own confirmation mechanism.

A tool listed in APPROVAL_REQUIRED_TOOLS has an ASK permission, so AgentScope parks the
reply with a `RequireUserConfirmEvent`. The run records each call as a pending approval
(saving the agents' state, so a decision still counts after a restart), emits
`approval.requested`, and waits without its time limit running. An operator decides
through the API or the live view; the reply then resumes with AgentScope's
`UserConfirmResultEvent`. A decision that arrives when no run waits (the server
restarted) starts a run that resumes the parked reply.
"""

import asyncio
import json
import time
import uuid

from agentscope.event import ConfirmResult, RequireUserConfirmEvent, UserConfirmResultEvent
from agentscope.message import ToolCallBlock

from app.engine.runs.run import Run
from app.events import ApprovalRequested, ApprovalResolved
from app.store import Store
from app.store.models import Approval

# The reply id of an approval asked for by the conversation flow (a business step run by
# code), not by a parked AgentScope reply.
FLOW_REPLY = "flow"


class ApprovalClosed(Exception):
    """The approval was already decided."""


class ApprovalDesk:
    def __init__(self, store: Store, timeout_seconds: float) -> None:
        self.store = store
        self.timeout = timeout_seconds
        self._waiting: dict[str, asyncio.Future[bool]] = {}

    async def ask(
        self, run: Run, agent: str, request: RequireUserConfirmEvent
    ) -> UserConfirmResultEvent:
        """Record and announce the calls, wait for every decision, and answer AgentScope."""
        await self.store.save_agent_states(
            run.conversation_id,
            {name: state.model_dump_json() for name, state in run.agent_states.items()},
        )
        loop = asyncio.get_running_loop()
        pending: list[tuple[Approval, asyncio.Future[bool]]] = []
        for call in request.tool_calls:
            approval = Approval(
                id=uuid.uuid4().hex,
                conversation_id=run.conversation_id,
                run_id=run.id,
                agent=agent,
                reply_id=request.reply_id,
                tool=call.name,
                tool_call=call.model_dump(mode="json"),
                created_at=time.time(),
            )
            await self.store.save_approval(approval)
            future = self._waiting[approval.id] = loop.create_future()
            pending.append((approval, future))
            await run.emit(
                ApprovalRequested,
                agent=agent,
                approval_id=approval.id,
                tool=call.name,
                arguments=_arguments(call),
            )
        results = []
        run.waiting_since = time.monotonic()
        try:
            for approval, future in pending:
                try:
                    approved = await asyncio.wait_for(future, self.timeout)
                except TimeoutError:
                    approved = False
                    await self._close(approval, False, "timeout")
                await run.emit(
                    ApprovalResolved, agent=agent, approval_id=approval.id, approved=approved
                )
                call = ToolCallBlock.model_validate(approval.tool_call)
                results.append(ConfirmResult(confirmed=approved, tool_call=call))
        finally:
            run.excluded_seconds += time.monotonic() - run.waiting_since
            run.waiting_since = None
            for approval, _ in pending:
                self._waiting.pop(approval.id, None)
        return UserConfirmResultEvent(reply_id=request.reply_id, confirm_results=results)

    async def confirm(self, run: Run, agent: str, tool: str, arguments: dict) -> bool:
        """Ask an operator to approve a step the flow wants to take, and wait for it. The
        agents' states are saved first, so a decision after a restart still counts."""
        await self.store.save_agent_states(
            run.conversation_id,
            {name: state.model_dump_json() for name, state in run.agent_states.items()},
        )
        call = ToolCallBlock(id=uuid.uuid4().hex, name=tool, input=json.dumps(arguments))
        approval = Approval(
            id=uuid.uuid4().hex,
            conversation_id=run.conversation_id,
            run_id=run.id,
            agent=agent,
            reply_id=FLOW_REPLY,
            tool=tool,
            tool_call=call.model_dump(mode="json"),
            created_at=time.time(),
        )
        await self.store.save_approval(approval)
        future = self._waiting[approval.id] = asyncio.get_running_loop().create_future()
        await run.emit(
            ApprovalRequested, agent=agent, approval_id=approval.id, tool=tool, arguments=arguments
        )
        run.waiting_since = time.monotonic()
        try:
            approved = await asyncio.wait_for(future, self.timeout)
        except TimeoutError:
            approved = False
            await self._close(approval, False, "timeout")
        finally:
            run.excluded_seconds += time.monotonic() - run.waiting_since
            run.waiting_since = None
            self._waiting.pop(approval.id, None)
        await run.emit(ApprovalResolved, agent=agent, approval_id=approval.id, approved=approved)
        return approved

    async def decide(self, approval_id: str, approved: bool, by: str) -> tuple[Approval, bool]:
        """Record an operator's decision; returns the approval and whether a live run was
        waiting for it (if not, the caller resumes the parked reply)."""
        approval = await self.store.get_approval(approval_id)
        if approval is None:
            raise LookupError(approval_id)
        if approval.status != "pending":
            raise ApprovalClosed(approval_id)
        approval = await self._close(approval, approved, by)
        future = self._waiting.get(approval_id)
        if future is not None and not future.done():
            future.set_result(approved)
            return approval, True
        return approval, False

    async def _close(self, approval: Approval, approved: bool, by: str) -> Approval:
        approval.status = "approved" if approved else "rejected"
        approval.decided_by = by
        approval.resolved_at = time.time()
        await self.store.save_approval(approval)
        return approval


def arguments_of(approval: Approval) -> dict:
    """The arguments of the call an approval was asked for."""
    return _arguments(ToolCallBlock.model_validate(approval.tool_call))


def _arguments(call: ToolCallBlock) -> dict:
    try:
        value = json.loads(call.input or "{}")
    except ValueError:
        return {"input": call.input}
    return value if isinstance(value, dict) else {"input": value}


def resumption(approval: Approval) -> UserConfirmResultEvent:
    """AgentScope's answer to a parked reply, from a decision recorded earlier."""
    call = ToolCallBlock.model_validate(approval.tool_call)
    return UserConfirmResultEvent(
        reply_id=approval.reply_id,
        confirm_results=[ConfirmResult(confirmed=approval.status == "approved", tool_call=call)],
    )
