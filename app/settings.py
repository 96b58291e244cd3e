"""Service settings, read from ``INSIGHTHUB_*`` environment variables and validated at start-up."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.schemas.events import LEVEL_ALIASES, Level

KiB = 1024
MiB = 1024 * KiB
MIN_API_KEY_CHARS = 16


class Settings(BaseSettings):
    """Every tunable of the service. Each field is ``INSIGHTHUB_<NAME>`` in the environment."""

    # hide_input_in_errors: a start-up error must never print the API key it was given.
    model_config = SettingsConfigDict(
        env_prefix="INSIGHTHUB_", extra="ignore", frozen=True, hide_input_in_errors=True
    )

    env: Literal["development", "production", "test"] = "development"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO",
        description="The service's own log lines (model served, training jobs, the pause "
        "decision) at this level and above, on standard error beside uvicorn's, when the "
        "service is started as app.main:app and the host has not configured logging itself.",
    )
    artifacts_dir: Path = Field(default=Path("artifacts"), description="Where model versions live.")
    keep_versions: int = Field(
        default=10, ge=1, le=1000, description="Model versions kept on disk."
    )

    # Isolation Forest
    if_contamination: float = Field(default=0.02, gt=0.0, le=0.5)
    if_n_estimators: int = Field(default=100, ge=1, le=2000)
    if_max_samples: int = Field(default=256, ge=2, le=100_000)
    if_random_state: int = Field(default=42, ge=0, le=2**32 - 1)  # numpy RandomState's range

    # Sliding window over event time
    window_minutes: float = Field(default=5.0, gt=0.0, le=24 * 60)
    window_buckets: int = Field(default=60, ge=1, le=3600, description="Buckets per window.")
    window_min_events: int = Field(
        default=10, ge=2, description="Events a window needs before its latency z-score counts."
    )

    # Per-service baseline
    baseline_warmup_events: int = Field(
        default=20, ge=3, le=10_000, description="Events before a service's latency is judged."
    )
    baseline_halflife_minutes: float = Field(
        default=60.0,
        gt=0.0,
        le=7 * 24 * 60,
        description="Event-time half-life of each service's latency and error-rate baseline.",
    )
    max_services: int = Field(default=100_000, ge=1, description="Services tracked at most.")
    window_store: str = Field(
        default="memory",
        description="Where per-service windows and online state live. Only 'memory' (this "
        "process) is built; 'redis' (the design's store for several workers or hosts) is not yet "
        "and is refused at start-up rather than silently ignored.",
    )

    # Combination
    target_false_alarm_rate: float = Field(
        default=0.001,
        gt=0.0,
        lt=0.5,
        description="Rate of normal events a method may flag; its score is 0.5 at this rarity.",
    )
    anomaly_threshold: float = Field(default=0.5, gt=0.0, lt=1.0)
    alarm_repeat_events: int = Field(
        default=100,
        ge=0,
        le=1_000_000,
        description="A flagged event no stronger than one of the service's alarms among its last "
        "this many events scores the threshold (a repeat); 0 turns this off.",
    )
    alarm_run_margin: float = Field(
        default=0.05,
        ge=0.0,
        le=1.0,
        description="A flagged event right after a flagged event of the same service is a repeat "
        "unless its score is higher by at least this much (an incident under way, its evidence "
        "accumulating); 0 keeps only the horizon's rule.",
    )
    alarm_recurrence_days: int = Field(
        default=2,
        ge=0,
        le=30,
        description="A flagged event at a time of day (+-30 min) when the service was flagged on "
        "each of this many days before scores the threshold (a daily recurrence, such as a "
        "nightly job); 0 turns this off.",
    )
    weight_isolation_forest: float = Field(default=1.0, ge=0.0, le=1.0)
    weight_sliding_window: float = Field(default=1.0, ge=0.0, le=1.0)
    weight_templates: float = Field(default=1.0, ge=0.0, le=1.0)
    weight_sequence: float = Field(default=1.0, ge=0.0, le=1.0)
    weight_forecast: float = Field(default=1.0, ge=0.0, le=1.0)
    weight_autoencoder: float = Field(default=1.0, ge=0.0, le=1.0)
    weight_lstm_sequence: float = Field(default=1.0, ge=0.0, le=1.0)
    weight_likelihood: float = Field(default=1.0, ge=0.0, le=1.0)
    weight_pattern: float = Field(default=1.0, ge=0.0, le=1.0)
    weight_record: float = Field(default=1.0, ge=0.0, le=1.0)
    confidence_events: int = Field(
        default=100,
        ge=1,
        description="Events of a service at which its confidence reaches 0.5 (0.91 at 10x).",
    )

    # Message templates and the next-template (sequence) model
    template_max: int = Field(default=5000, ge=10, le=1_000_000, description="Templates kept.")
    template_similarity: float = Field(default=0.5, gt=0.0, le=1.0)
    template_surge_messages: float = Field(
        default=50.0,
        gt=0.0,
        le=1_000_000,
        description="Half-life, in the service's own messages, of a template's recent count.",
    )
    template_surge_min_level: Level = Field(
        default=Level.WARN,
        description="Lowest level whose template surges are judged (INFO lines are bursty).",
    )
    sequence_top_k: int = Field(default=5, ge=1, le=1000)
    sequence_max_contexts: int = Field(default=4096, ge=16, le=1_000_000)

    # Seasonal forecast of latency and error rate
    forecast_slots: int = Field(default=48, ge=1, le=1440, description="Seasonal slots per day.")
    forecast_halflife_minutes: float = Field(default=1440.0, gt=0.0, le=30 * 24 * 60)
    forecast_season_halflife_days: float = Field(default=14.0, gt=0.0, le=365.0)
    forecast_bucket_seconds: float = Field(default=10.0, gt=0.0, le=3600.0)

    # Training
    train_workers: int = Field(default=1, ge=1, le=16, description="Processes that fit models.")
    train_max_rows: int = Field(default=2_000_000, ge=100)
    train_min_rows: int = Field(default=50, ge=10)
    train_max_row_trees: int = Field(
        default=200_000_000,
        ge=1,
        description="Largest rows x n_estimators of one job (2,000,000 rows x 100 trees by "
        "default); beyond it POST /train is a 422. Fitting and scoring the training rows cost "
        "about this product.",
    )
    train_timeout_seconds: float = Field(
        default=600.0,
        gt=0.0,
        le=7 * 24 * 3600,
        description="A fit running longer fails with a message; the worker takes the next job.",
    )
    train_priority: Literal["idle", "low", "normal"] = Field(
        default="idle",
        description="CPU priority of the fitting and body-parsing processes. idle: Linux's "
        "SCHED_IDLE, they get only CPU time scoring does not want (on a machine kept fully busy "
        "by other work a fit may not progress until its timeout); low: nice 10, they always "
        "progress but take a share of the CPU from scoring while they run; normal: unchanged.",
    )
    train_cpus: int = Field(
        default=0,
        ge=0,
        le=4096,
        description="Run the fitting and body-parsing processes on only the last this many of the "
        "CPUs the service may use (Linux), so they do not move onto the core that scoring was "
        "just using and evict its caches; 0 (default) or at least the number of CPUs: any CPU. "
        "A fit uses one core at a time. With train_priority idle on a machine that other work "
        "keeps busy, a confined fit gets only the idle time of its own CPUs: on a 2-core machine "
        "at load 11, train_cpus=1 did not finish a 2,000-row fit in 120 s.",
    )
    train_pause_while_serving: bool | Literal["auto"] = Field(
        default="auto",
        description="Stop the fitting and body-parsing processes (SIGSTOP) while a request is "
        "being served and let them go on (SIGCONT) when none is: on some small machines a fit "
        "on another core still slows scoring on this one (shared execution units, caches, power "
        "budget), whatever its priority. A pause lasts at most 50 ms, then the fit runs at "
        "least 50 ms, so under a load that never leaves the service idle a fit still gets half "
        "the time. auto (default): measured at start-up (~0.15 s in a child process: a "
        "pure-Python loop with and without an idle-priority spinner on another CPU), pausing "
        "only if the spinner slows the loop by 10% or more, since the signals cost each request "
        "some latency of their own; true or false: always or never. Not on Windows.",
    )

    # Access control
    api_key: SecretStr | None = Field(
        default=None,
        description="Key that mutating endpoints require (Authorization: Bearer or X-API-Key). "
        "Required when env is production.",
    )
    require_key_for_scoring: bool = Field(
        default=False, description="Require the key on /score and /score/batch too."
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Browser origins allowed by CORS, comma-separated; empty turns CORS off.",
    )
    cors_allow_credentials: bool = False

    # Limits (bytes are counted as they arrive, whatever Content-Length claims)
    max_body_bytes: int = Field(
        default=64 * KiB, ge=1 * KiB, description="Largest request body of routes not named below."
    )
    max_body_bytes_score: int = Field(default=64 * KiB, ge=1 * KiB)
    max_body_bytes_batch: int = Field(
        default=16 * MiB, ge=1 * KiB, description="10,000 events of up to ~1.6 KB each."
    )
    max_body_bytes_train: int = Field(
        default=128 * MiB, ge=1 * KiB, description="100,000 log events of up to ~1.3 KB each."
    )
    max_concurrent_requests: int = Field(
        default=256,
        ge=1,
        description="Requests served at once; more are answered 503 with Retry-After at once. "
        "/health, /ready and /metrics are not counted.",
    )
    retry_after_seconds: int = Field(default=1, ge=1, le=3600)

    @field_validator("template_surge_min_level", mode="before")
    @classmethod
    def _level_alias(cls, value: Any) -> Any:
        # Levels are accepted as events accept them: any case, WARNING and FATAL included.
        return LEVEL_ALIASES.get(value.upper(), value) if isinstance(value, str) else value

    @field_validator("window_store")
    @classmethod
    def _only_the_built_window_store(cls, value: str) -> str:
        # A user who asks for shared windows must learn at start-up that they do not get them:
        # several workers would each keep their own windows and score differently.
        if value == "memory":
            return value
        if value == "redis":
            raise ValueError(
                "the Redis window store is not built yet: windows and the other online state "
                "live in this process's memory ('memory', the only choice); run one worker per "
                "artifacts directory (README, Architecture)"
            )
        raise ValueError("must be 'memory' (the only window store built)")

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    @field_validator("api_key")
    @classmethod
    def _api_key_is_strong(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < MIN_API_KEY_CHARS:
            raise ValueError(
                f"INSIGHTHUB_API_KEY must have at least {MIN_API_KEY_CHARS} characters"
            )
        return value

    @model_validator(mode="after")
    def _safe_in_production(self) -> Settings:
        if self.env == "production" and self.api_key is None:
            raise ValueError(
                "INSIGHTHUB_API_KEY must be set when INSIGHTHUB_ENV=production: without it "
                "anyone who reaches the service could retrain or swap its model"
            )
        if self.cors_allow_credentials and "*" in self.cors_origins:
            raise ValueError(
                "INSIGHTHUB_CORS_ORIGINS may not contain '*' while "
                "INSIGHTHUB_CORS_ALLOW_CREDENTIALS is true: list the allowed origins"
            )
        return self

    @field_validator("artifacts_dir")
    @classmethod
    def _artifacts_dir_is_writable(cls, value: Path) -> Path:
        value.mkdir(parents=True, exist_ok=True)
        if not os.access(value, os.W_OK):
            raise ValueError(f"artifacts directory {value} is not writable")
        return value

    @model_validator(mode="after")
    def _training_bounds_are_consistent(self) -> Settings:
        if self.train_min_rows > self.train_max_rows:
            raise ValueError("train_min_rows must not exceed train_max_rows")
        return self

    @property
    def window_seconds(self) -> float:
        return self.window_minutes * 60.0

    def method_weights(self) -> dict[str, float]:
        return {
            "isolation_forest": self.weight_isolation_forest,
            "sliding_window": self.weight_sliding_window,
            "templates": self.weight_templates,
            "sequence": self.weight_sequence,
            "forecast": self.weight_forecast,
            "autoencoder": self.weight_autoencoder,
            "lstm_sequence": self.weight_lstm_sequence,
            "likelihood": self.weight_likelihood,
            "pattern": self.weight_pattern,
            "record": self.weight_record,
        }
