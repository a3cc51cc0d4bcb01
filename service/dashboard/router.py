"""``GET /`` (the page) and ``GET /dashboard/static/{path}`` (its assets), both left out of the OpenAPI document.

The page needs no credentials to load: it holds no data. Everything it shows comes from the ``/v1`` API, called
from the browser with ``Authorization: Bearer <key>``.
"""
from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, HTMLResponse

from service.errors import problem_response

STATIC_DIR = Path(__file__).resolve().parent / "static"

_MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".json": "application/json",
}
# The page and its modules change with each release of the package; let browsers revalidate instead of guessing.
_HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}

router = APIRouter(include_in_schema=False)


@router.get("/", response_class=HTMLResponse)
def dashboard() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", media_type=_MEDIA_TYPES[".html"], headers=_HEADERS)


@router.get("/dashboard/static/{path:path}")
def static_file(path: str):
    root = STATIC_DIR
    target = (root / path).resolve()
    media_type = _MEDIA_TYPES.get(target.suffix.lower())
    if root not in target.parents or not target.is_file() or media_type is None:
        return problem_response(404, "Not found", f"no dashboard file {path!r}", slug="not-found")
    return FileResponse(target, media_type=media_type, headers=_HEADERS)
