"""/v1/jobs/{id}/events: live progress as server-sent events."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse

from service.api.deps import OwnerDep, SessionDep, SettingsDep
from service.errors import problem_responses
from service.services import jobs as jobs_service
from service.services.job_events import Cursor

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

_STREAM_DOC = """Server-sent events (`text/event-stream`):

- `event: status`, `data: {"id", "status", "attempts", "progress": {"epoch", "epochs", "fraction"}, "error",
  "result_version"}` when the job's status changes (and first, with the status it has now);
- `event: progress`, `data: <history row>` once per epoch (`{"epoch", "loss", "val_loss"?, ..., "seconds"}`);
- `: keep-alive` comments while nothing happens;
- the stream ends after a final status (`succeeded`, `failed`, `cancelled`).

Every event has an `id` (`"<epoch>.<status seq>"`); send the last one back as `Last-Event-ID` (header, or the
`last_event_id` query parameter) to resume with no duplicate and no gap. Epochs recorded before the stream
opened are sent first, so a stream opened on a finished job replays its whole history."""


@router.get(
    "/{job_id}/events",
    response_class=StreamingResponse,
    summary="Follow a job live (server-sent events)",
    description=_STREAM_DOC,
    responses={
        200: {
            "description": "The job's event stream",
            # Before OpenAPI 3.2 the schema of an event stream describes one event (its wire fields).
            "content": {"text/event-stream": {"schema": {
                "type": "object",
                "required": ["event", "data"],
                "properties": {
                    "event": {"type": "string", "enum": ["status", "progress"]},
                    "data": {"type": "string", "description": "JSON: the job's status, or one history row"},
                    "id": {"type": "string"},
                    "retry": {"type": ["integer", "string"]},
                },
            }}},
        },
        **problem_responses(401, 404),
    },
)
def job_events(
    job_id: str,
    request: Request,
    session: SessionDep,
    owner: OwnerDep,
    settings: SettingsDep,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
    last_event_id_query: Annotated[
        str | None, Query(alias="last_event_id", description="Same as the Last-Event-ID header.")
    ] = None,
) -> StreamingResponse:
    jobs_service.get(session, owner, job_id)  # another owner's job: 404
    cursor = Cursor.parse(last_event_id or last_event_id_query)
    hub = request.app.state.event_hub
    return StreamingResponse(
        hub.stream(job_id, cursor, settings.events_keepalive_s),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
