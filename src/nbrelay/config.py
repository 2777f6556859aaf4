"""Settings, read from NBRELAY_* environment variables (or passed in), checked when built.

Backends are picked by URL: `database_url` sqlite:///… or postgresql://…
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


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
    auth_mode: Literal["none"] = "none"
    local_user: str = "local"

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
