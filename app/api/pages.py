"""The pages and assets the server serves itself: the demo page, the widget script and
the operator console (the recent conversations, and the live view of one)."""

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from app.errors import ApiError

STATIC = Path(__file__).resolve().parents[1] / "static"

router = APIRouter(include_in_schema=False)

# Pages run only this server's scripts and talk only to it; the widget's Shadow DOM
# carries its own <style>, hence 'unsafe-inline' for styles alone.
PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'self'"
)
# A script is no document: nothing may load on its behalf; any site may embed it.
ASSET_CSP = "default-src 'none'; frame-ancestors 'none'"


def static_file(name: str, media_type: str) -> FileResponse:
    path = STATIC / name
    if not path.is_file():
        raise ApiError(404, "not_found", f"No {name} in this build.")
    headers = {
        "Cache-Control": "no-cache",
        "Content-Security-Policy": PAGE_CSP if media_type.startswith("text/html") else ASSET_CSP,
        "X-Content-Type-Options": "nosniff",
    }
    if name == "widget.js":
        headers["Cross-Origin-Resource-Policy"] = "cross-origin"
    return FileResponse(path, media_type=media_type, headers=headers)


@router.get("/")
async def demo_page() -> FileResponse:
    return static_file("index.html", "text/html; charset=utf-8")


@router.get("/widget.js")
async def widget_script() -> FileResponse:
    return static_file("widget.js", "text/javascript; charset=utf-8")


CONSOLE_ASSETS = {
    "console.css": "text/css; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",  # shared by both pages; the list page
    "console_live.js": "text/javascript; charset=utf-8",  # the live view of a workflow
    "console_graph.js": "text/javascript; charset=utf-8",
    "console_panels.js": "text/javascript; charset=utf-8",
}


@router.get("/console")
async def console_page() -> FileResponse:
    """The operator console: recent conversations and workflows."""
    return static_file("console.html", "text/html; charset=utf-8")


@router.get("/console/workflows/{workflow_id}")
async def console_workflow_page(workflow_id: str) -> FileResponse:
    """The live view of one workflow; the page reads the id from its own path."""
    return static_file("console_workflow.html", "text/html; charset=utf-8")


@router.get("/console/assets/{name}")
async def console_asset(name: str) -> FileResponse:
    """The console's styles and scripts (JavaScript modules, no build step)."""
    media_type = CONSOLE_ASSETS.get(name)
    if media_type is None:
        raise ApiError(404, "not_found", f"No console asset {name}.")
    return static_file(name, media_type)
