"""Settings, read from NBRELAY_* environment variables (or passed in), checked when built.

Backends are picked by URL: `database_url` sqlite:///… or postgresql://…
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def _default_workers() -> int:
    return max(1, os.cpu_count() or 1)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NBRELAY_", env_file=None, extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(8765, ge=0, le=65535)
    workspace: Path = Path("workspace")
    data_dir: Path = Path("data")
    database_url: str = ""
    executor: Literal["local"] = "local"
    workers: int = Field(default_factory=_default_workers, ge=1, le=256)
    # Warm kernels kept ready per kernel name in each worker process.
    kernel_pool_size: int = Field(1, ge=0, le=16)
    # Fork python kernels from a preloaded process (about 8x less CPU per kernel than a fresh interpreter).
    fork_kernels: bool = True
    kernel_startup_timeout_s: float = Field(60.0, gt=0)
    # After a timeout or cancel: interrupt the kernel, wait this long, then kill it.
    interrupt_grace_s: float = Field(3.0, ge=0)
    default_timeout_s: float | None = Field(None, gt=0)
    default_cell_timeout_s: float | None = Field(None, gt=0)
    max_timeout_s: float = Field(7 * 24 * 3600.0, gt=0)
    output_throttle_s: float = Field(0.25, ge=0)
    output_max_chars: int = Field(4000, ge=0)
    # Auth: none (local single user, admin), token (API tokens, signed session cookie), header (SSO proxy).
    auth_mode: Literal["none", "token", "header"] = "none"
    local_user: str = "local"
    secret_key: str = ""  # signs session cookies; empty: generated once and kept in <data_dir>/secret_key
    session_max_age_s: float = Field(14 * 24 * 3600.0, gt=0)
    user_header: str = "X-Forwarded-User"
    # NoDecode: the environment's text reaches _comma_list as it is (else it must be JSON, and "a,b" fails).
    trusted_proxies: Annotated[list[str], NoDecode] = ["127.0.0.1", "::1"]
    admin_users: Annotated[list[str], NoDecode] = []
    # Origins allowed for WebSocket/SSE and cookie-carrying writes; empty: the request's own host only.
    allowed_origins: Annotated[list[str], NoDecode] = []

    # Workspace: in auth modes token and header each user has users/<name>/ and everyone the shared folder.
    home_dir: str = Field("users", pattern=r"^[A-Za-z0-9_.-]+$")
    shared_dir: str = Field("shared", pattern=r"^[A-Za-z0-9_.-]+$")
    max_upload_bytes: int = Field(100 * 1024 * 1024, ge=1)

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

    @field_validator("trusted_proxies", "admin_users", "allowed_origins", mode="before")
    @classmethod
    def _comma_list(cls, value: object) -> object:
        # NBRELAY_ADMIN_USERS=alice,bob reads as a list, as does a JSON list.
        if isinstance(value, str) and value.strip().startswith("["):
            return json.loads(value)
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("workspace", "data_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @model_validator(mode="after")
    def _default_database(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite:///{self.data_dir / 'nbrelay.db'}"
        return self

    @property
    def reports_dir(self) -> Path:
        return self.data_dir / "reports"

    @property
    def per_user_folders(self) -> bool:
        return self.auth_mode != "none"
