"""Turn a model provider's exception into a run failure a visitor and an operator can act on."""

import httpx
import ollama
import openai

from app.events import ErrorInfo


def classify_llm_error(exc: BaseException, provider: str, model: str, host: str) -> ErrorInfo:
    """A stable `code` and a message that says what to do."""
    if isinstance(exc, ollama.ResponseError):
        if exc.status_code == 404:
            return ErrorInfo(
                code="llm_model_not_found",
                message=f"The model '{model}' is not available on the Ollama server at {host}. "
                f"Run `ollama pull {model}` there, or set OLLAMA_MODEL to a pulled model.",
            )
        return ErrorInfo(code="llm_error", message=f"Ollama reported an error: {exc.error}")
    if isinstance(exc, openai.NotFoundError):
        return ErrorInfo(
            code="llm_model_not_found",
            message=f"The model '{model}' is not served at {host}; set OPENAI_MODEL to one it has.",
        )
    if isinstance(exc, httpx.TimeoutException | openai.APITimeoutError):
        return ErrorInfo(
            code="llm_timeout", message=f"The {provider} server at {host} did not answer in time."
        )
    if isinstance(exc, httpx.TransportError | ConnectionError | openai.APIConnectionError):
        return ErrorInfo(
            code="llm_unavailable",
            message=f"Cannot reach the {provider} server at {host}. Start it, or set "
            "LLM_PROVIDER=offline to use the built-in engine.",
        )
    if isinstance(exc, openai.APIError):
        return ErrorInfo(code="llm_error", message=f"The model server reported an error: {exc}")
    return ErrorInfo(code="internal_error", message="The reply failed because of a server error.")
