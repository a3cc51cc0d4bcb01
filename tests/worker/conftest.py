"""Fixtures for the worker-side unit tests: a fresh SQLite database with the tables, settings that
point at it, and a fake ``engine`` module with the real one's interface (so the runner's database
logic is tested apart from the numerics)."""
from __future__ import annotations

import json
import sys
import time
import types
from datetime import timedelta
from typing import Any

import numpy as np
import pytest
from sqlalchemy import create_engine, event
from sqlalchemy.orm import sessionmaker

from service.config import Settings
from service.db.models import Base, Dataset, Job, Model, Owner, utcnow


@pytest.fixture(autouse=True)
def checkpoint_every_epoch(monkeypatch):
    """The fake engine's epochs take microseconds: without this, the checkpoint budget would space
    its checkpoints out. Tests of the budget set it back."""
    from workers import runner

    monkeypatch.setattr(runner, "CHECKPOINT_BUDGET", float("inf"))


@pytest.fixture()
def settings(tmp_path) -> Settings:
    return Settings(
        data_dir=tmp_path,
        database_url=f"sqlite:///{tmp_path / 'app.db'}",
        broker_url=f"sqla+sqlite:///{tmp_path / 'broker.db'}",
        heartbeat_interval_s=0.2,
        heartbeat_timeout_s=30,
    )


@pytest.fixture()
def sf(settings):
    eng = create_engine(settings.resolved_database_url, connect_args={"timeout": 30})

    @event.listens_for(eng, "connect")
    def _pragmas(conn, _rec):
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA foreign_keys=ON")

    Base.metadata.create_all(eng)
    yield sessionmaker(eng, expire_on_commit=False)
    eng.dispose()


def npz_bytes(**arrays) -> bytes:
    import io

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


@pytest.fixture()
def make_job(sf):
    """make_job(**config) -> job id, with an owner, a model and a small dataset."""

    def make(status: str = "queued", epochs: int = 3, **config: Any) -> str:
        with sf() as s, s.begin():
            owner = Owner(name="t")
            s.add(owner)
            s.flush()
            X = np.arange(20, dtype=np.float32).reshape(10, 2)
            y = np.array([0, 1] * 5, dtype=np.int64)
            ds = Dataset(owner_id=owner.id, name="d", task="classification", n_samples=10,
                         n_features=2, input_shape=[2], feature_names=["a", "b"],
                         target_names=["t"], classes=["no", "yes"], size_bytes=1,
                         data=npz_bytes(X=X, y=y))
            model = Model(owner_id=owner.id, name="m", input_shape=[2],
                          spec={"input_shape": [2], "layers": [{"type": "dense", "units": 2}]},
                          summary={"layers": [{"name": "dense", "output_shape": [None, 2]}]})
            s.add_all([ds, model])
            s.flush()
            cfg = {"loss": "sparse_categorical_crossentropy", "epochs": epochs, "seed": 1,
                   "checkpoint_every": 1, **config}
            job = Job(owner_id=owner.id, model_id=model.id, dataset_id=ds.id, status=status,
                      config=cfg, epochs=epochs, enqueued_at=utcnow())
            s.add(job)
            s.flush()
            return job.id

    return make


# --------------------------------------------------------------------------------------------------
# A fake engine with the real interface
# --------------------------------------------------------------------------------------------------


class Diverged(Exception):
    def __init__(self, epoch: int, batch: int):
        super().__init__(f"loss diverged at epoch {epoch}, batch {batch}")
        self.epoch = epoch
        self.batch = batch


class SpecError(ValueError):
    pass


class SimulatedCrash(BaseException):
    """Escapes the runner's ``except Exception`` like a process death would."""


class _Event:
    def __init__(self, model: "FakeModel", epoch: int, row: dict | None = None, batch: int = 0):
        self.model, self.epoch, self.row, self.batch = model, epoch, row, batch

    def checkpoint(self) -> bytes:
        FakeModel.calls.append(("checkpoint", self.epoch))
        time.sleep(self.model.config.get("checkpoint_sleep", 0))
        return json.dumps({"w": self.model.w, "epoch": self.epoch, "config": self.model.config,
                           "history": self.model.history}).encode()

    def stop(self) -> None:
        self.model.stopped = True


class FakeModel:
    calls: list[tuple[str, Any]] = []

    def __init__(self, spec: dict, seed: int | None):
        self.w = float(seed or 0)
        self.config: dict = {}
        self.history: list = []
        self.stopped = False
        self.weights_epoch: int | None = None     # as engine.Model: the epoch whose weights it holds

    def fit(self, X, y, *, callbacks=(), batch_callbacks=(), **config):
        FakeModel.calls.append(("fit", dict(config)))
        self.config = config
        return self._loop(1, X, y, callbacks, batch_callbacks)

    def _loop(self, start, X, y, callbacks, batch_callbacks):
        cfg = self.config
        for epoch in range(start, cfg["epochs"] + 1):
            for batch in range(1, cfg.get("batches", 2) + 1):
                if cfg.get("diverge_at") == epoch:
                    raise Diverged(epoch, batch)
                time.sleep(cfg.get("batch_sleep", 0))
                self.w = self.w * 1.5 + float(X.sum()) * 1e-3 + float(np.asarray(y).sum()) * 1e-3
                for cb in batch_callbacks:
                    cb(_Event(self, epoch, batch=batch))
                if self.stopped:
                    return self.history
            row = {"epoch": epoch, "loss": np.float32(1.0 / epoch), "accuracy": np.float64(0.5),
                   "grad_norms": {"dense": np.float32(0.1)}, "seconds": 0.01,
                   "learning_rate": 0.001}
            self.history.append({k: (float(v) if isinstance(v, np.floating) else v)
                                 for k, v in row.items() if k != "grad_norms"})
            self.weights_epoch = epoch
            for cb in callbacks:
                cb(_Event(self, epoch, row=row))
            if cfg.get("crash_after") == epoch:
                raise SimulatedCrash(f"crash after epoch {epoch}")
            if self.stopped:
                break
        return self.history

    def to_bytes(self) -> bytes:
        return json.dumps({"w": self.w}).encode()


def resume(checkpoint: bytes, X, y, *, callbacks=(), batch_callbacks=()):
    state = json.loads(checkpoint)
    FakeModel.calls.append(("resume", state["epoch"]))
    m = FakeModel({}, 0)
    m.w, m.config, m.history = state["w"], state["config"], state["history"]
    m.config.pop("crash_after", None)  # a crash is an event, not part of the fit
    hist = m._loop(state["epoch"] + 1, X, y, callbacks, batch_callbacks)
    return m, hist


def build(spec: dict, seed: int | None = None) -> FakeModel:
    return FakeModel(spec, seed)


@pytest.fixture()
def fake_engine(monkeypatch):
    mod = types.ModuleType("engine")
    mod.build, mod.resume, mod.Diverged, mod.SpecError = build, resume, Diverged, SpecError
    monkeypatch.setitem(sys.modules, "engine", mod)
    FakeModel.calls = []
    return mod


def set_heartbeat(sf, job_id: str, seconds_ago: float, **values) -> None:
    from sqlalchemy import update

    with sf() as s, s.begin():
        s.execute(update(Job).where(Job.id == job_id).values(
            heartbeat_at=utcnow() - timedelta(seconds=seconds_ago), **values))
