"""The operator's live view of a workflow (or chat): a snapshot, then every event.

The socket subscribes before it reads the snapshot, then skips the live events the
snapshot already holds, so a viewer that connects mid-run misses nothing and sees
nothing twice. It is for operators: the token comes as the subprotocols
`bearer, <token>` (accepted with `bearer`), `?token=` or `Authorization: Bearer`.
"""

import asyncio
import json
from collections import OrderedDict

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from pydantic import ValidationError

from app.api.approvals import Decision
from app.api.callers import deny, socket_operator
from app.api.deps import get_ws_services
from app.api.errors import error_body
from app.errors import ApiError
from app.events import Event

router = APIRouter(tags=["workflows"])


class SharedFrames:
    """The JSON of recent events, made once for all the viewers of a conversation
    (published events do not change; `run_id:seq` names one)."""

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._frames: OrderedDict[str, str] = OrderedDict()

    def json_of(self, event: Event) -> str:
        key = event.sse_id
        if (frame := self._frames.get(key)) is None:
            frame = self._frames[key] = event.to_json()
            if len(self._frames) > self.size:
                self._frames.popitem(last=False)
        return frame


FRAMES = SharedFrames()


@router.websocket("/api/ws/workflows/{workflow_id}")
async def live_view(websocket: WebSocket, workflow_id: str) -> None:
    services = get_ws_services(websocket)
    try:
        _, subprotocol = await socket_operator(websocket)
    except ApiError as exc:
        await deny(websocket, exc)
        return
    await websocket.accept(subprotocol=subprotocol)
    workflows = services.parley.workflows
    subscription = workflows.watch(workflow_id)
    try:
        taken = await workflows.snapshot(workflow_id)
        if taken is None:
            request_id = websocket.scope.get("state", {}).get("request_id")
            body = error_body("workflow_not_found", f"No workflow {workflow_id}.", request_id)
            await websocket.send_text(json.dumps({"type": "error", **body}))
            await websocket.close(code=4404)
            return
        frame, seen = taken
        await websocket.send_text(json.dumps(frame))
        reader = asyncio.create_task(_answer_pings(websocket))
        reader.add_done_callback(lambda _: subscription.close())  # the viewer left
        try:
            async for live in subscription:
                if isinstance(live, Event):
                    if live.seq <= seen.get(live.run_id, 0):
                        continue  # already in the snapshot
                    await websocket.send_text(FRAMES.json_of(live))
                else:
                    await websocket.send_text(live.to_json())
        finally:
            reader.cancel()
    except WebSocketDisconnect:
        return
    finally:
        subscription.close()


async def _answer_pings(websocket: WebSocket) -> None:
    """Read the viewer's frames: `ping` gets `pong`; a closed socket ends the view."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        try:
            frame = json.loads(message.get("text") or "")
        except ValueError:
            frame = None
        if isinstance(frame, dict) and frame.get("type") == "ping":
            await websocket.send_text(json.dumps({"type": "pong"}))
        elif isinstance(frame, dict) and frame.get("type") == "approval":
            await _decide(websocket, frame)


async def _decide(websocket: WebSocket, frame: dict) -> None:
    """`{"type": "approval", "approval_id", "approved", "by"?}` from an operator's view."""
    try:
        decision = Decision.model_validate(frame)
        approvals = get_ws_services(websocket).parley.approvals
        await approvals.decide(str(frame.get("approval_id")), decision.approved, decision.by)
    except ValidationError as exc:
        await websocket.send_text(
            json.dumps(
                {
                    "type": "error",
                    "approval_id": frame.get("approval_id"),
                    **error_body("invalid_frame", str(exc), None),
                }
            )
        )
    except ApiError as exc:
        await websocket.send_text(
            json.dumps(
                {
                    "type": "error",
                    "approval_id": frame.get("approval_id"),
                    **error_body(exc.code, exc.message, None),
                }
            )
        )
