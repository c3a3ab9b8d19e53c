"""Prometheus metrics of this process, for operators (see app/observability/metrics.py)."""

from fastapi import APIRouter, Request, Response

from app.api.callers import OPERATOR_ONLY

router = APIRouter(tags=["operations"])


@router.get(
    "/metrics",
    dependencies=[OPERATOR_ONLY],
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}}},
)
async def metrics(request: Request) -> Response:
    """Runs by outcome, first-token latency, tokens per second, tool calls, open streams,
    queued runs and rate-limit refusals, in Prometheus' text format."""
    registry = request.app.state.services.metrics
    return Response(registry.render(), media_type=registry.content_type)
