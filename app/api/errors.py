"""One error shape for every failure: `{"error": {"code", "message", "request_id"}}`."""

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.errors import ApiError, BusUnavailable, ConversationNotFound, RunNotFound, StoreUnavailable

log = logging.getLogger(__name__)

BUS_UNAVAILABLE_MESSAGE = (
    "The server cannot reach its event bus (Redis) right now, so it can neither start nor "
    "stream a reply; please try again in a moment."
)


def error_body(code: str, message: str, request_id: str | None) -> dict:
    return {"error": {"code": code, "message": message, "request_id": request_id}}


def request_id_of(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


def error_response(request: Request, status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse(error_body(code, message, request_id_of(request)), status_code=status)


def _describe_validation(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors()[:5]:
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {error.get('msg')}")
    return "; ".join(parts)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        response = error_response(request, exc.status, exc.code, exc.message)
        response.headers.update(exc.headers or {})
        return response

    @app.exception_handler(ConversationNotFound)
    async def conversation_not_found(request: Request, exc: ConversationNotFound) -> JSONResponse:
        return error_response(request, 404, "conversation_not_found", f"No conversation {exc}.")

    @app.exception_handler(RunNotFound)
    async def run_not_found(request: Request, exc: RunNotFound) -> JSONResponse:
        return error_response(request, 404, "run_not_found", f"No run {exc}.")

    @app.exception_handler(StoreUnavailable)
    async def store_unavailable(request: Request, exc: StoreUnavailable) -> JSONResponse:
        log.warning("store unavailable on %s %s: %s", request.method, request.url.path, exc)
        response = error_response(
            request,
            503,
            "store_unavailable",
            "The database cannot be reached right now, so nothing was saved; "
            "please try again in a moment.",
        )
        response.headers["Retry-After"] = "5"
        return response

    @app.exception_handler(BusUnavailable)
    async def bus_unavailable(request: Request, exc: BusUnavailable) -> JSONResponse:
        log.warning("bus unavailable on %s %s: %s", request.method, request.url.path, exc)
        response = error_response(request, 503, "bus_unavailable", BUS_UNAVAILABLE_MESSAGE)
        response.headers["Retry-After"] = "5"
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        if any(e.get("type") == "json_invalid" for e in exc.errors()):
            return error_response(request, 400, "invalid_json", "The body is not valid JSON.")
        return error_response(request, 422, "invalid_request", _describe_validation(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed"}
        code = codes.get(exc.status_code, "http_error")
        return error_response(request, exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(request, 500, "internal_error", "The server failed; it was logged.")
