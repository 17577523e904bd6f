"""The single settings object, read from `ATLASREC_*` environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from atlasrec.errors import ConfigError
from atlasrec.tenancy import Region

MIN_SECRET_LEN = 32
FRESHNESS_SIGNALS = ("model", "features", "backbone", "federation")
DEV_SECRET = "atlasrec-development-secret-do-not-use-in-production"  # noqa: S105


class Settings(BaseSettings):
    """Platform settings. Embedded defaults: SQLite files and local folders under `home`.

    Per-region database URLs are given as `ATLASREC_REGION_DB_URLS='{"eu": "postgresql+psycopg://..."}'`
    or one at a time as `ATLASREC_REGION_DB_URLS__EU=...`.
    """

    model_config = SettingsConfigDict(
        env_prefix="ATLASREC_", env_nested_delimiter="__", extra="ignore"
    )

    environment: Literal["development", "staging", "production"] = "development"
    region: Region | None = None
    """The region this process runs in; None (embedded mode) lets one process open every
    region's data plane, each still behind its own boundary."""
    home: Path = Field(default_factory=lambda: Path.home() / ".atlasrec")
    secret_key: SecretStr = SecretStr(DEV_SECRET)
    control_db_url: str | None = None
    region_db_urls: dict[Region, str] = Field(default_factory=dict)
    pg_app_role: str = "atlasrec_app"
    redis_url: str | None = None
    broker_url: str | None = None
    max_epsilon_cap: float = Field(default=20.0, gt=0, le=1000.0)
    """The platform's maximum DP budget (epsilon cap) of any tenant: `tenants create`,
    `privacy set-cap`, raise requests and their approvals are refused above it."""
    dp_secure_mode: bool = False
    """DP secure mode: DP noise and Poisson sampling from the OS CSPRNG (`privacy.secure_mode`)."""
    serving_budget_ms: dict[str, float] = Field(
        default_factory=lambda: {
            "features": 20.0,
            "retrieval": 40.0,
            "ranking": 20.0,
            "reranking": 20.0,
        }
    )
    """Per-stage deadlines of the serving path; a stage that would start past its deadline
    (the sum of the budgets up to it) is skipped and the response says it is degraded."""
    serving_reload_s: float = 2.0
    """How often the serving app looks for new model versions and catalog changes."""
    serving_auth_cache_s: float = 2.0
    """How long the serving app remembers an API key's tenant (revocation delay)."""
    serving_auth_stale_s: float = Field(default=3_600.0, ge=0)
    """While the control plane cannot be reached, how long after it was read a key's last
    answer still stands (a key revoked during the outage works until the outage ends)."""
    federation_interval_s: float = Field(default=86_400.0, gt=0)
    """How often Celery beat runs each region's federated rounds."""
    federation_rounds: int = Field(default=2, ge=1)
    """Rounds per scheduled federation run."""
    retrain_check_s: float = Field(default=3_600.0, gt=0)
    """How often Celery beat looks for models past their SLO to retrain (per region)."""
    serving_redis_timeout_s: float = 0.05
    """Socket timeout of the serving path's online-store calls."""
    serving_record_wait_s: float = Field(default=2.0, gt=0)
    """How long a recommendation waits for its served record to be kept (in the region's log,
    or this process's spool) before it answers 503 instead."""
    db_lock_wait_s: float | None = Field(default=None, gt=0)
    """How long a region database statement waits for another transaction's lock before it
    fails (a 503 on the API; nothing is written). Unset: SQLite 30 s, PostgreSQL no limit;
    `atlasrec serve` sets 5 s unless this is set."""
    freshness_slo_s: dict[str, float] = Field(
        default_factory=lambda: {
            "model": 7 * 86_400.0,
            "features": 300.0,
            "backbone": 14 * 86_400.0,
            "federation": 2 * 86_400.0,
        }
    )
    """Freshness SLOs (seconds) of every tenant: model age, feature lag (while events wait
    for the online store), backbone age and time since the last completed federation run
    (`atlasrec/freshness.py`)."""
    freshness_slo_overrides: dict[str, dict[str, float]] = Field(default_factory=dict)
    """Per tenant SLOs that replace the defaults, e.g. `{"shop": {"model": 86400}}`."""
    ops_token: SecretStr | None = None
    """Bearer token of the serving app's operator endpoints (/metrics, /healthz/detail). Unset:
    they answer only clients on this host that came through no proxy (an internal bind)."""
    event_log_url: str | None = None
    """The regions' event log: `nats://host:port` (JetStream); unset: a local file per region."""
    event_log_root: str = Field(default="atlasrec", pattern=r"^[a-z][a-z0-9_-]{0,31}$")
    """First token of the logs' subjects (and prefix of their streams' names)."""
    event_duplicate_window_s: float = Field(default=600.0, gt=0)
    """How long the JetStream log remembers an event id to refuse it as a duplicate."""
    serving_consumers: bool = True
    """Run the event log's consumers inside the serving process (off when they run apart)."""
    event_ack_wait_s: float = Field(default=30.0, gt=0)
    """A consumer's delivery not acknowledged within this time is delivered again."""
    offline_store_dir: Path | None = None
    """Root of the offline store (Parquet by tenant and date); unset: `home / "offline"`."""

    @model_validator(mode="after")
    def _check_freshness_slos(self) -> Settings:
        named = {"ATLASREC_FRESHNESS_SLO_S": self.freshness_slo_s} | {
            f"ATLASREC_FRESHNESS_SLO_OVERRIDES[{t!r}]": s
            for t, s in self.freshness_slo_overrides.items()
        }
        for where, slos in named.items():
            for signal, seconds in slos.items():
                if signal not in FRESHNESS_SIGNALS:
                    known = ", ".join(FRESHNESS_SIGNALS)
                    raise ConfigError(f"{where}: unknown signal {signal!r} (one of {known})")
                if not seconds > 0:
                    raise ConfigError(f"{where}[{signal!r}]: give a positive number of seconds")
        missing = set(FRESHNESS_SIGNALS) - set(self.freshness_slo_s)
        if missing:
            raise ConfigError(f"ATLASREC_FRESHNESS_SLO_S: no SLO for {', '.join(sorted(missing))}")
        return self

    def freshness_slo(self, tenant_id: str, signal: str) -> float:
        """The tenant's freshness SLO of `signal`, in seconds."""
        return self.freshness_slo_overrides.get(tenant_id, {}).get(
            signal, self.freshness_slo_s[signal]
        )

    @model_validator(mode="after")
    def _refuse_unsafe_defaults(self) -> Settings:
        secret = self.secret_key.get_secret_value()
        ops = self.ops_token.get_secret_value() if self.ops_token is not None else None
        if ops is not None and len(ops) < MIN_SECRET_LEN:
            raise ConfigError(f"ATLASREC_OPS_TOKEN must be at least {MIN_SECRET_LEN} characters")
        if self.environment != "development":
            if secret == DEV_SECRET:
                raise ConfigError(
                    f"ATLASREC_SECRET_KEY must be set in the {self.environment} environment "
                    "(the built-in development secret is refused outside development)"
                )
            if len(secret) < MIN_SECRET_LEN:
                raise ConfigError(
                    f"ATLASREC_SECRET_KEY must be at least {MIN_SECRET_LEN} characters"
                )
        return self

    def control_url(self) -> str:
        """Database URL of the (global) control plane."""
        return self.control_db_url or f"sqlite:///{self.home / 'control.db'}"

    def region_url(self, region: Region) -> str:
        """Database URL of one region's data plane."""
        return self.region_db_urls.get(region) or f"sqlite:///{self.region_dir(region) / 'data.db'}"

    def offline_root(self) -> Path:
        """Root folder of the offline store (one sub-folder per region)."""
        return self.offline_store_dir or self.home / "offline"

    def region_dir(self, region: Region) -> Path:
        """Local folder of one region's data plane (SQLite file, artifacts, ledger anchor)."""
        return self.home / "regions" / region.value


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings from the environment, read once per process."""
    try:
        return Settings()
    except ConfigError:
        raise
    except ValueError as exc:  # pydantic's ValidationError wraps ConfigError raised above
        cause = exc.__cause__ if isinstance(exc.__cause__, ConfigError) else None
        raise ConfigError(str(cause) if cause else f"invalid settings: {exc}") from exc
