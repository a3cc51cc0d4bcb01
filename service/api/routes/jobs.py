"""/v1/jobs"""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status

from service.api.deps import EnqueueDep, OwnerDep, PageDep, SessionDep, SettingsDep
from service.errors import problem_responses
from service.schemas.common import Page
from service.schemas.jobs import CheckpointOut, JobContinue, JobCreate, JobOut, JobStatus
from service.services import job_history, jobs as service

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

HistoryTail = Annotated[int | None, Query(
    ge=0, le=1_000_000,
    description="Only the last N rows of each job's history (0: none). A job or list that is polled, such as a "
                "dashboard's, stays small however many epochs its jobs have; the default is the whole history.",
)]


@router.post(
    "", status_code=status.HTTP_202_ACCEPTED, response_model=JobOut, responses=problem_responses(401, 422, 429)
)
def create_job(
    body: JobCreate, session: SessionDep, owner: OwnerDep, settings: SettingsDep, enqueue: EnqueueDep
) -> JobOut:
    job = service.create(session, settings, owner, body, enqueue)
    # Commit here, not after the response is built: the transaction holds the owner's row lock
    # (the concurrent-jobs count), and FastAPI builds a sync route's response in the threadpool.
    # With every pool thread busy in another submission waiting for that very lock, the response
    # (and the commit after it) would wait for a free thread: a burst of submissions deadlocked
    # until the connection pool timed out (503s after 30 s).
    session.commit()
    out = JobOut.from_row(job, [])
    out.warnings = service.warnings(session, job)
    return out


@router.get("", response_model=Page[JobOut], responses=problem_responses(401, 422))
def list_jobs(
    session: SessionDep,
    owner: OwnerDep,
    page: PageDep,
    status: Annotated[JobStatus | None, Query()] = None,
    model_id: Annotated[str | None, Query(max_length=64, pattern=r"^[^\x00]*$")] = None,
    sweep_id: Annotated[str | None, Query(max_length=64, pattern=r"^[^\x00]*$",
                                          description="only the trials of this sweep")] = None,
    history_tail: HistoryTail = None,
) -> Page[JobOut]:
    rows, total = service.list_(session, owner, page.limit, page.offset, status=status, model_id=model_id,
                                sweep_id=sweep_id)
    histories = job_history.tails(session, rows, history_tail)
    return Page[JobOut](items=[JobOut.from_row(r, histories[r.id]) for r in rows], total=total)


@router.get("/{job_id}", response_model=JobOut, responses=problem_responses(401, 404))
def get_job(job_id: str, session: SessionDep, owner: OwnerDep, history_tail: HistoryTail = None) -> JobOut:
    job = service.get(session, owner, job_id)
    return JobOut.from_row(job, job_history.tails(session, [job], history_tail)[job.id])


@router.post(
    "/{job_id}/cancel", status_code=status.HTTP_202_ACCEPTED, response_model=JobOut,
    responses=problem_responses(401, 404, 409),
)
def cancel_job(job_id: str, session: SessionDep, owner: OwnerDep) -> JobOut:
    job = service.cancel(session, owner, job_id)
    return JobOut.from_row(job, job_history.load(session, job.id))


@router.post(
    "/{job_id}/continue", status_code=status.HTTP_202_ACCEPTED, response_model=JobOut,
    responses=problem_responses(401, 404, 409, 422, 429),
)
def continue_job(
    job_id: str, session: SessionDep, owner: OwnerDep, settings: SettingsDep, enqueue: EnqueueDep,
    body: JobContinue | None = None,
) -> JobOut:
    """A new job that carries this one's fit on from its latest checkpoint: a cancelled (or lost) job finished,
    a succeeded one trained to more epochs, bit-identical to one job of that many epochs."""
    job = service.continue_(session, settings, owner, job_id, body.epochs if body else None, enqueue)
    session.commit()    # as create_job does: the owner's row lock is released before the response is built
    return JobOut.from_row(job, [])


@router.get(
    "/{job_id}/checkpoints", response_model=Page[CheckpointOut], responses=problem_responses(401, 404, 422)
)
def list_checkpoints(job_id: str, session: SessionDep, owner: OwnerDep, page: PageDep) -> Page[CheckpointOut]:
    rows, total = service.list_checkpoints(session, owner, job_id, page.limit, page.offset)
    return Page[CheckpointOut](items=[CheckpointOut.model_validate(r) for r in rows], total=total)
