"""Routes that answer with a file: their OpenAPI responses and the header that names the file."""
from __future__ import annotations

from typing import Any

from service.errors import problem_responses


def file_responses(description: str, media_types: tuple[str, ...], *error_statuses: int) -> dict[int | str, Any]:
    """``responses=`` for a route whose 200 is a file of one of ``media_types``, plus its problem+json errors."""
    return {200: {"content": {m: {} for m in media_types}, "description": description},
            **problem_responses(*error_statuses)}


def attachment(filename: str) -> dict[str, str]:
    """The headers that make a client save the body as ``filename``."""
    return {"Content-Disposition": f'attachment; filename="{filename}"'}
