"""/v1/sweeps: hyperparameter grids, one training job per combination."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from service.api.deps import EnqueueDep, OwnerDep, PageDep, SessionDep, SettingsDep
from service.errors import problem_responses
from service.schemas.common import Page
from service.schemas.jobs import JobOut
from service.schemas.sweeps import CrossValidation as CrossValidationOut
from service.schemas.sweeps import CrossValidationPoint as CrossValidationPointOut
from service.schemas.sweeps import SweepCreate, SweepOut, TrialOut
from service.services import sweep_results, sweeps as service
from service.services.sweep_results import CrossValidation, CrossValidationPoint, SweepView, Trial

router = APIRouter(prefix="/v1/sweeps", tags=["sweeps"])


def _trial(trial: Trial) -> TrialOut:
    return TrialOut(job_id=trial.job_id, params=trial.params, status=trial.status,  # type: ignore[arg-type]
                    epochs_done=trial.epochs_done, objective=trial.objective, result_version=trial.result_version)


def _out(view: SweepView) -> SweepOut:
    sweep = view.sweep
    return SweepOut(
        id=sweep.id, name=sweep.name, model_id=sweep.model_id, dataset_id=sweep.dataset_id, grid=sweep.grid,
        config=sweep.config, objective=sweep.objective, mode=sweep.mode, status=view.status,  # type: ignore[arg-type]
        created_at=sweep.created_at, trials=[_trial(t) for t in view.trials],
        best=_trial(view.best) if view.best is not None else None,
        cross_validation=_cross_validation(view.cross_validation),
    )


def _cross_validation(cv: CrossValidation | None) -> CrossValidationOut | None:
    if cv is None:
        return None

    def point(p: CrossValidationPoint) -> CrossValidationPointOut:
        return CrossValidationPointOut(
            params=p.params, job_ids=[t.job_id for t in p.trials],
            folds_succeeded=sum(t.status == "succeeded" for t in p.trials), objective_mean=p.mean,
            objective_std=p.std)

    return CrossValidationOut(folds=cv.folds, points=[point(p) for p in cv.points],
                              best=point(cv.best) if cv.best is not None else None)


@router.post(
    "", status_code=status.HTTP_202_ACCEPTED, response_model=SweepOut, responses=problem_responses(401, 422, 429)
)
def create_sweep(
    body: SweepCreate, session: SessionDep, owner: OwnerDep, settings: SettingsDep, enqueue: EnqueueDep
) -> SweepOut:
    """Validate every trial as POST /v1/jobs validates a job, then queue one job per combination of the grid's
    values (all or nothing; the trials count against the owner's concurrent jobs together)."""
    sweep = service.create(session, settings, owner, body, enqueue)
    # Commit here, as create_job does: the transaction holds the owner's row lock (the concurrent-jobs count),
    # which must not wait for a free threadpool thread to build the response.
    session.commit()
    out = _out(sweep_results.views(session, [sweep])[0])
    out.warnings = service.warnings(session, sweep)
    return out


@router.get("", response_model=Page[SweepOut], responses=problem_responses(401, 422))
def list_sweeps(
    session: SessionDep,
    owner: OwnerDep,
    page: PageDep,
    model_id: Annotated[str | None, Query(max_length=64, pattern=r"^[^\x00]*$")] = None,
) -> Page[SweepOut]:
    rows, total = service.list_(session, owner, page.limit, page.offset, model_id=model_id)
    return Page[SweepOut](items=[_out(v) for v in sweep_results.views(session, rows)], total=total)


@router.get("/{sweep_id}", response_model=SweepOut, responses=problem_responses(401, 404))
def get_sweep(sweep_id: str, session: SessionDep, owner: OwnerDep) -> SweepOut:
    """The sweep with each trial's status and objective, and the best trial so far."""
    return _out(sweep_results.views(session, [service.get(session, owner, sweep_id)])[0])


@router.post(
    "/{sweep_id}/cancel", status_code=status.HTTP_202_ACCEPTED, response_model=SweepOut,
    responses=problem_responses(401, 404),
)
def cancel_sweep(sweep_id: str, session: SessionDep, owner: OwnerDep) -> SweepOut:
    """Cancel every trial still queued or running, as POST /v1/jobs/{id}/cancel does; ended trials stay."""
    sweep = service.cancel(session, owner, sweep_id)
    return _out(sweep_results.views(session, [sweep])[0])


@router.post(
    "/{sweep_id}/refit", status_code=status.HTTP_202_ACCEPTED, response_model=JobOut,
    responses=problem_responses(401, 404, 409, 429),
)
def refit_sweep(
    sweep_id: str, session: SessionDep, owner: OwnerDep, settings: SettingsDep, enqueue: EnqueueDep
) -> JobOut:
    """A cross-validation sweep's best point trained on every row (its fold versions each saw (k-1)/k of them):
    a queued job of the sweep's base config with the point's values and no validation rows."""
    job = service.refit(session, settings, owner, sweep_id, enqueue)
    session.commit()    # as create_job does: the owner's row lock is released before the response is built
    return JobOut.from_row(job, [])


@router.delete(
    "/{sweep_id}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response,
    responses=problem_responses(401, 404, 409),
)
def delete_sweep(sweep_id: str, session: SessionDep, owner: OwnerDep) -> Response:
    """Delete the sweep (409 while a trial is queued or running); its jobs and their versions stay."""
    service.delete(session, owner, sweep_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
