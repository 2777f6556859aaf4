"""Settings, read from NBRELAY_* environment variables (or passed in), checked when built.

Backends are picked by URL: `database_url` sqlite:///… or postgresql://…, `broker_url` sql://, memory:// or
redis://…; the executor by name: `executor` local or celery.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import socket
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# The URL schemes each backend setting accepts (the backends check again when they open).
_SCHEMES: dict[str, dict[str, str]] = {
    "database_url": {
        "sqlite": "sqlite:///path",
        "sqlite+aiosqlite": "sqlite+aiosqlite:///path",
        "postgresql": "postgresql://user@host/db",
        "postgresql+psycopg": "postgresql+psycopg://…",
    },
    "broker_url": {
        "sql": "sql:// (history in the job database)",
        "memory": "memory:// (this process only)",
        "redis": "redis://host:port/db (several nodes)",
        "rediss": "rediss://… (Redis over TLS)",
    },
    "celery_broker_url": {
        "redis": "redis://host:port/db",
        "rediss": "rediss://…",
        "amqp": "amqp://user:password@host:5672// (RabbitMQ)",
        "amqps": "amqps://…",
        "pyamqp": "pyamqp://…",
    },
}


def settings_problem(exc: ValidationError) -> str:
    """A settings error as one line per problem, for people (no pydantic jargon)."""
    lines = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error.get("loc", ()))
        message = str(error.get("msg", "")).removeprefix("Value error, ")
        named = message.startswith("NBRELAY_") or not where  # not where: about several settings, which it names
        lines.append(message if named else f"NBRELAY_{where.upper()}: {message}")
    return "\n".join(lines)


def _default_workers() -> int:
    return max(1, os.cpu_count() or 1)


# NBRELAY_* names that are no setting of the server but are read all the same: the CLI's (--server, --token) and
# what a worker process tells its kernels.
_OTHER_NAMES = {"NBRELAY_SERVER", "NBRELAY_TOKEN", "NBRELAY_RUNTIME_DIR"}


def unknown_names(environ: Mapping[str, str]) -> list[str]:
    """The NBRELAY_* variables of `environ` that nothing reads, each with the setting it may have meant (found
    from outside: NBRELAY_DATABSE_URL left a worker on a SQLite file of its own, ready and taking wake-ups)."""
    known = {f"NBRELAY_{name.upper()}" for name in Settings.model_fields} | _OTHER_NAMES | {"NBRELAY_REPORTS_DIR"}
    lines = []
    for name in sorted(environ):
        if name.startswith("NBRELAY_") and name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.8)
            lines.append(
                f"{name} is no setting of nbrelay and is ignored" + (f" (did you mean {close[0]}?)" if close else "")
            )
    return lines


def hide_password(url: str) -> str:
    """`url` without the password it may hold (user:password@host → user:***@host), for messages."""
    return re.sub(r"(://[^/@:]*:)[^/@]*@", r"\1***@", url)


class Settings(BaseSettings):
    # An empty variable (NBRELAY_DEFAULT_TIMEOUT_S= in an env file) means the default, and inf or nan is no value
    # of any setting (found from outside: NBRELAY_REPORT_KEEP_DAYS=inf was taken, and every retention pass failed).
    model_config = SettingsConfigDict(
        env_prefix="NBRELAY_",
        env_file=None,
        extra="ignore",
        env_ignore_empty=True,
        allow_inf_nan=False,
        populate_by_name=True,
    )

    host: str = "127.0.0.1"
    port: int = Field(8765, ge=0, le=65535)
    workspace: Path = Path("workspace")
    data_dir: Path = Path("data")
    database_url: str = ""
    # local: worker processes of this server (one node). celery: `nbrelay worker` processes on any machine take
    # the jobs (several web nodes and workers, docs/deploy.md).
    executor: Literal["local", "celery"] = "local"
    # Celery's broker (redis://… or amqp://…); empty: the Redis of broker_url.
    celery_broker_url: str = ""
    # A worker renews the lease of each job it runs every few seconds; a lease not renewed for this long means
    # the worker is lost, and the job is re-queued (lost_job_retries times at most) or fails with "worker lost".
    lease_timeout_s: float = Field(30.0, ge=1)
    lost_job_retries: int = Field(0, ge=0, le=100)
    # /metrics without credentials: None means open in auth mode none only; elsewhere an admin's token (Prometheus:
    # `authorization: {credentials: <token>}`) unless set to true.
    metrics_public: bool | None = None
    # `nbrelay worker` serves its Prometheus metrics on this port (on `host`); 0: not at all.
    worker_metrics_port: int = Field(0, ge=0, le=65535)
    # This machine's name in worker ids and logs.
    node_name: str = Field(default_factory=socket.gethostname, min_length=1, max_length=100)
    # Reports and executed notebooks; shared by every node and worker in multi-node mode. Empty: <data_dir>/reports.
    reports_folder: Path | None = Field(None, validation_alias="NBRELAY_REPORTS_DIR")
    workers: int = Field(default_factory=_default_workers, ge=1, le=256)
    # Warm kernels kept ready per kernel name in each worker process. Each is started (forked) while jobs run, so it
    # is also how many kernel starts are under way at once, which bounds throughput: 80 tiny jobs back to back on two
    # cores, two workers, ran at ~900 jobs/min with 3, ~1,180 with 4, ~1,340 with 5, ~1,400 with 6, ~1,470 with 8
    # (docs/benchmarks.md, F2); an idle forked kernel costs ~25 MiB (PSS).
    kernel_pool_size: int = Field(6, ge=0, le=16)
    # Fork python kernels from a preloaded process (about 8x less CPU per kernel than a fresh interpreter).
    fork_kernels: bool = True
    kernel_startup_timeout_s: float = Field(60.0, gt=0)
    # A job's kernel may hold at most this much memory (its data segment: heap and private mappings, RLIMIT_DATA);
    # past it, allocations fail and the job fails "out of memory". 0: no limit.
    kernel_memory_max_mb: int = Field(0, ge=0)
    # After a timeout or cancel: interrupt the kernel, wait this long, then kill it.
    interrupt_grace_s: float = Field(3.0, ge=0)
    default_timeout_s: float | None = Field(None, gt=0)
    default_cell_timeout_s: float | None = Field(None, gt=0)
    max_timeout_s: float = Field(7 * 24 * 3600.0, gt=0)
    output_throttle_s: float = Field(0.25, ge=0)
    output_max_chars: int = Field(4000, ge=0)  # of one live output event
    # Output kept in a job's notebook and report: per cell (its first and last halves), and per job in all. What
    # is cut is said in the cell. A flood of output then costs neither the worker's memory nor a huge report.
    cell_output_max_chars: int = Field(2_000_000, ge=1000)
    job_output_max_chars: int = Field(20_000_000, ge=1000)
    # Auth: none (local single user, admin), token (API tokens, signed session cookie), header (SSO proxy).
    auth_mode: Literal["none", "token", "header"] = "none"
    local_user: str = "local"
    secret_key: str = ""  # signs session cookies; empty: generated once and kept in <data_dir>/secret_key
    session_max_age_s: float = Field(14 * 24 * 3600.0, gt=0)
    user_header: str = "X-Forwarded-User"
    # Failed token checks (an unknown or revoked API token: REST, POST /api/session, WebSocket, SSE) per client
    # address: after auth_max_failures within auth_failure_window_s, that address's token checks are refused
    # (429 with Retry-After) until the window ends. The address is the TCP peer's, or behind trusted_proxies the
    # forwarded one. 0: no limit.
    auth_max_failures: int = Field(20, ge=0)
    auth_failure_window_s: float = Field(60.0, gt=0)
    # NoDecode: the environment's text reaches _comma_list as it is (else it must be JSON, and "a,b" fails).
    trusted_proxies: Annotated[list[str], NoDecode] = ["127.0.0.1", "::1"]
    admin_users: Annotated[list[str], NoDecode] = []
    # Origins allowed for WebSocket/SSE and cookie-carrying writes; empty: the request's own host only.
    allowed_origins: Annotated[list[str], NoDecode] = []

    # Workspace: in auth modes token and header each user has users/<name>/ and everyone the shared folder.
    home_dir: str = Field("users", pattern=r"^[A-Za-z0-9_.-]+$")
    shared_dir: str = Field("shared", pattern=r"^[A-Za-z0-9_.-]+$")
    max_upload_bytes: int = Field(100 * 1024 * 1024, ge=1)
    # Cells of one notebook, uploaded (.ipynb) or submitted: past it, 422 too_many_cells, counted before nbformat
    # reads the notebook (its reading and validation cost ~50 us and ~2 KiB of memory a cell).
    max_notebook_cells: int = Field(10_000, ge=1)
    # Any other request body (JSON of jobs, schedules, …): over this, 413 before the route reads it.
    max_body_bytes: int = Field(1024 * 1024, ge=1024)
    # A job's parameters as JSON, at most: every page that connects is sent each unfinished job with them (found
    # from outside: 100 queued jobs of 900 KB made each connect 90 MB, and ten admin pages took the server to 1.6 GB).
    max_parameters_bytes: int = Field(64 * 1024, ge=1024)

    # The web page: the path prefix under which a reverse proxy publishes the service (e.g. /nbrelay; the proxy
    # strips it before forwarding). The page links everything relative to it; empty: relative to its address.
    base_path: str = Field("", pattern=r"^(/[A-Za-z0-9_~-][A-Za-z0-9._~-]*)*/?$")

    # Report history: keep the newest N reports of each notebook and/or those of jobs finished within D days (a
    # report goes if either rule says so); None: no limit. Applied at start, then every retention_interval_s.
    report_keep_last: int | None = Field(None, ge=1)
    report_keep_days: float | None = Field(None, gt=0)
    retention_interval_s: float = Field(3600.0, gt=0)

    # Push
    # sql://: history in the job database, resumes survive restarts; memory://: this process only.
    broker_url: str = "sql://"
    history_size: int = Field(1000, ge=1)
    history_ttl_s: float = Field(3600.0, gt=0)
    subscriber_queue_size: int = Field(1000, ge=8)
    heartbeat_s: float = Field(25.0, gt=0)  # WebSocket ping frames and the client's app-level ping period
    # A client silent (no ping, no message) for this long is closed with 4012; 0 turns it off.
    client_idle_timeout_s: float = Field(60.0, ge=0)
    sse_heartbeat_s: float = Field(15.0, gt=0)
    # The legacy profile (front ends written for the Spring WebSocket back end), see docs/legacy.md.
    legacy_ws_path: str = Field("/websocket", pattern=r"^/[A-Za-z0-9_./-]*$")
    legacy_unfinished_path: str = Field("/api/legacy/unfinished", pattern=r"^/[A-Za-z0-9_./-]*$")
    # SockJS (protocol 0.3.3) carrying the legacy envelope, and protocol v1 (docs/legacy.md, docs/protocol.md).
    sockjs_legacy_path: str = Field("/sockjs/websocket", pattern=r"^/[A-Za-z0-9_./-]*[A-Za-z0-9_-]$")
    sockjs_v1_path: str = Field("/sockjs/v1", pattern=r"^/[A-Za-z0-9_./-]*[A-Za-z0-9_-]$")
    # A session with no receiving request for this long is over; a streaming response ends after this many bytes.
    sockjs_disconnect_delay_s: float = Field(5.0, gt=0)
    sockjs_response_limit_bytes: int = Field(128 * 1024, ge=1)
    sockjs_cookie_needed: bool = False  # JSESSIONID on session requests, for load balancers' sticky sessions
    sockjs_client_url: str = ""  # sockjs-client for the iframe page (same version as the pages'); empty: no iframe
    max_connections: int = Field(20000, ge=1)
    max_connections_per_user: int = Field(200, ge=1)

    # Notifications (webhooks and e-mail, docs/user-guide.md "Notifications"). The public address of the service
    # (e.g. https://nbrelay.example.com/nbrelay): report links in webhooks and e-mails are made absolute with it;
    # empty: they stay relative to the service's root (/api/jobs/<id>/report).
    public_url: str = Field("", pattern=r"^(https?://[^\s/?#]+(/[^\s?#]*)?)?$")
    # Webhook targets on loopback, private, link-local or reserved addresses are refused unless this is true.
    webhook_allow_private: bool = False
    # Retries: first after notify_backoff_s, then doubling (each +-25 % jitter), at most notify_max_attempts in
    # all and none later than notify_horizon_s after the job ended.
    notify_backoff_s: float = Field(30.0, gt=0)
    notify_max_attempts: int = Field(8, ge=1, le=100)
    notify_horizon_s: float = Field(24 * 3600.0, gt=0)
    notify_timeout_s: float = Field(10.0, gt=0)  # one webhook request or SMTP conversation
    # A PEM file of one or more CA certificates that webhook endpoints' and the SMTP server's certificates may also
    # chain to (a company's private CA), in addition to the CAs trusted by default (notify/tls.py); checked at
    # start. None: the default CAs only. Certificates are always verified.
    notify_ca_file: Path | None = None
    notify_poll_s: float = Field(1.0, gt=0)  # how often each web node looks for due deliveries
    notify_concurrency: int = Field(16, ge=1, le=1000)  # deliveries in flight per node
    notify_endpoint_concurrency: int = Field(4, ge=1, le=100)  # of which to one webhook endpoint
    # SMTP for e-mail notifications; no host: e-mails are not sent (their deliveries fail and say why).
    smtp_host: str = ""
    smtp_port: int | None = Field(None, ge=1, le=65535)  # default: 465 for tls, 587 for starttls, 25 for none
    smtp_user: str = ""
    smtp_password: SecretStr = SecretStr("")
    smtp_from: str = ""  # default: nbrelay@<node_name>
    smtp_security: Literal["none", "starttls", "tls"] = "starttls"
    smtp_attachment_max_bytes: int = Field(5 * 1024 * 1024, ge=0)  # a larger report is linked, not attached

    @field_validator("trusted_proxies", "admin_users", "allowed_origins", mode="before")
    @classmethod
    def _comma_list(cls, value: object) -> object:
        # NBRELAY_ADMIN_USERS=alice,bob reads as a list, as does a JSON list.
        if isinstance(value, str) and value.strip().startswith("["):
            return json.loads(value)
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("database_url", "broker_url", "celery_broker_url")
    @classmethod
    def _known_scheme(cls, value: str, info: ValidationInfo) -> str:
        # Refused here, at start, with the setting's name: not later as a traceback from deep in a backend.
        if not value:
            return value
        scheme = value.split("://", 1)[0].lower() if "://" in value else ""
        if info.field_name == "database_url" and scheme == "postgres":  # as Heroku and others write it
            return "postgresql" + value[len(scheme) :]
        accepted = _SCHEMES[info.field_name or ""]
        if scheme not in accepted:
            setting = f"NBRELAY_{(info.field_name or '').upper()}"
            shown = hide_password(value)  # found from outside: the refusal printed the password
            raise ValueError(f"{setting}={shown!r} has an unsupported scheme: use {' or '.join(accepted.values())}")
        return value

    @field_validator("workspace", "data_dir", "reports_folder")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        return value.expanduser().resolve() if value is not None else None

    @field_validator("notify_ca_file")
    @classmethod
    def _ca_file(cls, value: Path | None) -> Path | None:
        # Refused here, at start: not later as every TLS delivery failing with an ssl error that names no setting.
        if value is None:
            return None
        path = Path(os.path.abspath(value.expanduser()))
        said = f"NBRELAY_NOTIFY_CA_FILE={str(path)!r}"
        wanted = "a PEM file of CA certificates (-----BEGIN CERTIFICATE-----)"
        if not path.exists():
            raise ValueError(f"{said} does not exist: set it to {wanted}, or leave it unset")
        if not path.is_file():
            raise ValueError(f"{said} is not a file: set it to {wanted}")
        store = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # without the system's CAs: only the file's are counted
        try:
            store.load_verify_locations(cafile=path)
        except ssl.SSLError as exc:
            if exc.reason == "NO_CERTIFICATE_OR_CRL_FOUND":  # empty, a key, some text
                raise ValueError(f"{said} holds no certificate: it must be {wanted}") from None
            raise ValueError(f"{said} holds a certificate that is not valid PEM: it must be {wanted}") from None
        except OSError as exc:
            raise ValueError(f"{said} cannot be read: {exc.strerror or exc}") from None
        if not store.cert_store_stats()["x509"]:  # certificate revocation lists only
            raise ValueError(f"{said} holds no certificate: it must be {wanted}")
        return path

    @model_validator(mode="after")
    def _default_database(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite:///{self.data_dir / 'nbrelay.db'}"
        if self.executor == "celery":
            # Said at start, in a line (found from outside: a 74-line traceback from the server's start-up).
            if self.database_url.startswith("sqlite"):
                raise ValueError(
                    "NBRELAY_EXECUTOR=celery: web nodes and workers share one job database; set "
                    "NBRELAY_DATABASE_URL=postgresql://user@host/db (it is a SQLite file of this machine)"
                )
            self.celery_broker  # noqa: B018 (raises, saying what to set, when there is no broker)
        return self

    @property
    def reports_dir(self) -> Path:
        return self.reports_folder or self.data_dir / "reports"

    @property
    def multi_node(self) -> bool:
        """Several processes share the jobs: web nodes and workers (the celery executor)."""
        return self.executor == "celery"

    @property
    def celery_broker(self) -> str:
        """Celery's broker URL: celery_broker_url, else the Redis of broker_url (without our ?prefix=, which is
        not a transport option)."""
        if self.celery_broker_url:
            return self.celery_broker_url.split("?", 1)[0]
        if self.broker_url.startswith(("redis://", "rediss://")):
            return self.broker_url.split("?", 1)[0]
        raise ValueError(
            "the celery executor needs a broker: set NBRELAY_CELERY_BROKER_URL (redis://… or amqp://…) or "
            f"NBRELAY_BROKER_URL=redis://host:port/db (it is {self.broker_url!r})"
        )

    @property
    def per_user_folders(self) -> bool:
        return self.auth_mode != "none"
