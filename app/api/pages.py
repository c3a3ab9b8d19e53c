"""The pages and assets the server serves itself: the demo page and the widget script."""

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from app.api.errors import ApiError

STATIC = Path(__file__).resolve().parents[1] / "static"

router = APIRouter(include_in_schema=False)


def static_file(name: str, media_type: str) -> FileResponse:
    path = STATIC / name
    if not path.is_file():
        raise ApiError(404, "not_found", f"No {name} in this build.")
    return FileResponse(path, media_type=media_type, headers={"Cache-Control": "no-cache"})


@router.get("/")
async def demo_page() -> FileResponse:
    return static_file("index.html", "text/html; charset=utf-8")


@router.get("/widget.js")
async def widget_script() -> FileResponse:
    return static_file("widget.js", "text/javascript; charset=utf-8")
