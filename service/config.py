"""One settings object for the whole service, read from ``BACKPROP_*`` environment variables.

With no configuration at all the service runs embedded: SQLite for state and Celery's SQLAlchemy
transport (another SQLite file) as the broker, both under ``BACKPROP_DATA_DIR``.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BACKPROP_", extra="ignore")

    data_dir: Path = Path(".backprop")
    # Empty means "embedded default under data_dir"; see the resolved_* properties.
    database_url: str = ""
    broker_url: str = ""
    queue_name: str = "training"
    # Apply the Alembic migrations when the API starts (the compose file's migrate service does it instead).
    auto_migrate: bool = True

    # Reliability
    heartbeat_timeout_s: float = 30.0
    heartbeat_interval_s: float = 2.0
    reconcile_interval_s: float = 5.0
    # The API process runs the reconciler too, so jobs are recovered even while no worker is up.
    api_reconciler: bool = True
    # A queued job whose broker message is older than this and no longer in the queue is re-sent.
    queued_resend_s: float = 30.0
    max_attempts: int = 3
    task_soft_time_limit_s: int = 6 * 3600
    task_hard_time_limit_s: int = 6 * 3600 + 300

    # Limits (413 for bodies, 422 for specs)
    max_upload_bytes: int = 200 * 1024 * 1024
    max_rows: int = 1_000_000
    max_features: int = 100_000
    max_params: int = 50_000_000
    max_epochs: int = 10_000
    max_predict_rows: int = 10_000
    # Queued + running jobs one owner may have at once; over it POST /v1/jobs answers 429 (0: no limit).
    max_concurrent_jobs_per_owner: int = Field(default=100, ge=0)
    # Trials (jobs) one hyperparameter sweep may expand to; a larger grid is refused with 422 naming it.
    max_sweep_trials: int = Field(default=100, ge=1)
    # Per API key token bucket (service.ratelimit), per API process: sustained requests/s and burst; 429 with
    # Retry-After when empty. 0 disables it. Generous by default so that benchmarks are not throttled.
    rate_limit_per_s: float = Field(default=1000.0, ge=0)
    rate_limit_burst: int = Field(default=2000, ge=1)

    # Serving
    model_cache_bytes: int = 512 * 1024 * 1024
    # Move what the API process holds once it has started (~140,000 objects: the libraries, the app, its routes)
    # out of the garbage collector's sight (gc.freeze), so that a full collection, which lands in the middle of
    # some request, scans only what requests made since: 70 ms -> 1-2 ms here (benchmarks/gc_pause.py).
    gc_freeze_at_startup: bool = True
    # Seconds a valid API key is remembered per process (by its hash), so requests skip the key lookup. A
    # revocation empties the cache of the process that makes it at once; other processes (another API process,
    # after `backprop keys revoke`) stop accepting the key within this TTL. 0 disables the cache.
    api_key_cache_ttl_s: float = Field(default=10.0, ge=0)

    # Live events (GET /v1/jobs/{id}/events): one database poll per process for every watched job, and a
    # comment line on idle streams so that proxies keep them open.
    events_poll_interval_s: float = 0.5
    events_keepalive_s: float = 15.0

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'backprop.db').resolve()}"

    @property
    def resolved_broker_url(self) -> str:
        if self.broker_url:
            return self.broker_url
        return f"sqla+sqlite:///{(self.data_dir / 'broker.db').resolve()}"

    @property
    def embedded(self) -> bool:
        return self.resolved_database_url.startswith("sqlite")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    settings = Settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return settings
