"""Settings of the service and the worker, from the environment (prefix CAVIAR_)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """One typed view of every setting; tests override `get_settings`."""

    model_config = SettingsConfigDict(env_prefix="CAVIAR_", extra="ignore")

    database_url: str = Field(
        default_factory=lambda: f"sqlite:///{Path.cwd() / 'caviar.db'}",
        description="SQLAlchemy URL; SQLite file in the working directory by default",
    )
    api_url: str = "http://127.0.0.1:8000"
    # Tokens: "name:scope1,scope2:secret" entries separated by ";" (scopes read, write, worker).
    tokens: str = ""
    # The token a worker presents; with no tokens configured, loopback needs none.
    token: str = ""

    migrate_on_start: bool = True
    lease_seconds: float = Field(30.0, gt=0)
    heartbeat_seconds: float = Field(5.0, gt=0)
    reap_interval_seconds: float = Field(2.0, gt=0)
    # A caviar study's trials checkpoint every `checkpoint_every` epochs but at most once
    # per this many seconds (and after their last epoch): enough to resume a requeued
    # trial or go on with a finished one, without a round trip every few short epochs.
    # Panda studies checkpoint on every schedule, for forks from any epoch. 0: no limit.
    caviar_checkpoint_seconds: float = Field(10.0, ge=0)

    # Caps against abuse (each can be raised by the operator).
    max_trials_per_study: int = Field(10_000, ge=1)
    max_grid_size: int = Field(10_000, ge=1)
    max_layers: int = Field(16, ge=1)
    max_units: int = Field(4096, ge=1)
    max_epochs: int = Field(10_000, ge=1)
    max_samples: int = Field(200_000, ge=1)
    max_body_bytes: int = Field(50 * 1024 * 1024, ge=1024)
    # A spec is a few kilobytes; parsing megabytes of YAML would tie up a thread for seconds.
    max_spec_bytes: int = Field(1024 * 1024, ge=1024)
    # Uploaded data sets: the file's size, and what its arrays may take once decompressed
    # (an NPZ is a zip: a small upload must not inflate into gigabytes).
    max_dataset_bytes: int = Field(20 * 1024 * 1024, ge=1024)
    max_dataset_array_bytes: int = Field(400 * 1024 * 1024, ge=1024)
    # Checked as an upload is read (service/uploads.py): its feature columns, and its
    # values (rows x feature columns, 8 bytes each once read).
    max_features: int = Field(10_000, ge=1)
    max_dataset_values: int = Field(10_000_000, ge=1)
    # Output units: a classification's classes, a regression's targets. Every worker
    # allocates a layer of them per trial: 40,000 labels were 6.4 GB each.
    max_classes: int = Field(1000, ge=2)
    # The largest checkpoint a trial stores (service.checkpoints refuses larger, so this
    # cannot be raised past it): a spec whose largest network would make a larger one is
    # refused at submission, instead of failing after training.
    max_checkpoint_bytes: int = Field(64 * 1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    # A panda trial keeps a checkpoint every `checkpoint_every` epochs: at most this many
    # (the default fits max_epochs at the default checkpoint_every of 10).
    max_checkpoints_per_trial: int = Field(1000, ge=1)
    # Uploads are parsed on threads of their own, so heartbeats, claims and reads never
    # wait behind them; more uploads at once wait for one of these.
    upload_threads: int = Field(2, ge=1, le=32)
    # Spec validations and previews per token (without tokens, per address), as a token
    # bucket like submissions: each may expand up to max_trials_per_study trials.
    spec_check_rate_per_minute: float = Field(120.0, gt=0)
    spec_check_burst: int = Field(30, ge=1)

    # Submissions (new studies, data set uploads) per token, as a token bucket: `burst`
    # at once, then `per_minute` on average. Without tokens the client's address is the key.
    submit_rate_per_minute: float = Field(60.0, gt=0)
    submit_burst: int = Field(20, ge=1)

    # Threads that run the API's synchronous routes (database work): more only add GIL
    # contention on CPU-bound reads; PostgreSQL deployments with slow round trips may raise it.
    api_threads: int = Field(4, ge=1, le=200)

    # Browser origins allowed by CORS, comma-separated; empty keeps CORS off (same origin).
    cors_origins: str = ""

    # What a web page may not do (service/browsers.py). The Host names this service answers
    # to besides loopback's (localhost, *.localhost, 127.0.0.1, [::1]) and the one
    # `caviar serve --host` names, comma-separated; `*.example.org` for its subdomains.
    # `*` answers to any name: UNSAFE without tokens, since a DNS-rebinding page gets in.
    allowed_hosts: str = ""
    # Proxies whose X-Forwarded-For/-Proto are believed, comma-separated addresses; empty
    # believes none, so a caller cannot pick the address its rate limit is counted under.
    forwarded_allow_ips: str = ""
    # A connection must have sent a request's headers this long after it opened or after
    # its last response, else it is closed: a trickle of header bytes holds nothing.
    header_timeout_seconds: float = Field(10.0, gt=0)
    # Event streams held open at once, per caller (token, or address) and in all: each
    # polls the database, and beyond these the other requests wait behind them.
    max_streams_per_client: int = Field(16, ge=1)
    max_streams: int = Field(128, ge=1)
    # /readyz says not ready when the disk holding a SQLite database has less free.
    ready_min_free_bytes: int = Field(16 * 1024 * 1024, ge=0)


@lru_cache
def get_settings() -> Settings:
    """The process's settings, read once."""
    return Settings()
