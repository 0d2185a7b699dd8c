"""The one settings object: environment, then `.env`, then defaults."""

from __future__ import annotations

import hashlib
import ipaddress
import os
import secrets as _secrets
from pathlib import Path

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECTOR_INTERVAL = 0.5  # seconds between projector batches under load (the default)


class ConfigError(Exception):
    """A setting has a bad value; the message names the variable."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
        populate_by_name=True,
    )

    database_url: SecretStr | None = Field(None, alias="DATABASE_URL")
    host: str = Field("127.0.0.1", alias="KAPSO_SINK_HOST")
    port: int = Field(8080, alias="KAPSO_SINK_PORT", ge=0, le=65535)
    webhook_secrets: SecretStr | None = Field(None, alias="KAPSO_WEBHOOK_SECRETS")
    max_body_bytes: int = Field(10 * 1024 * 1024, alias="KAPSO_SINK_MAX_BODY_BYTES", ge=1024)
    data_dir: Path = Field(Path(".kapso-sink"), alias="KAPSO_SINK_DATA_DIR")
    commit_timeout: float = Field(5.0, alias="KAPSO_SINK_COMMIT_TIMEOUT", gt=0, le=9.0)
    batch_max: int = Field(1000, alias="KAPSO_SINK_BATCH_MAX", ge=1, le=50_000)
    pool_size: int = Field(8, alias="KAPSO_SINK_POOL_SIZE", ge=2, le=200)
    api_token: SecretStr | None = Field(None, alias="KAPSO_SINK_API_TOKEN")
    log_level: str = Field("info", alias="KAPSO_SINK_LOG_LEVEL")
    log_format: str = Field("json", alias="KAPSO_SINK_LOG_FORMAT")
    projector: str = Field("process", alias="KAPSO_SINK_PROJECTOR")
    projector_interval: float = Field(
        PROJECTOR_INTERVAL, alias="KAPSO_SINK_PROJECTOR_INTERVAL", ge=0, le=60
    )
    spool_max_bytes: int = Field(256 * 1024 * 1024, alias="KAPSO_SINK_SPOOL_MAX_BYTES", ge=0)
    meta_app_secret: SecretStr | None = Field(None, alias="META_APP_SECRET")
    meta_verify_token: SecretStr | None = Field(None, alias="META_VERIFY_TOKEN")
    export_interval: float = Field(300.0, alias="KAPSO_SINK_EXPORT_INTERVAL", ge=0)
    export_dir: Path = Field(Path("exports"), alias="KAPSO_SINK_EXPORT_DIR")

    @field_validator("log_level")
    @classmethod
    def _level(cls, v: str) -> str:
        v = v.lower()
        if v not in {"debug", "info", "warning", "error"}:
            raise ValueError("must be one of debug, info, warning, error")
        return v

    @field_validator("projector", mode="before")
    @classmethod
    def _projector(cls, v) -> str:
        # process: a child process next to the web server (default); inline: on the server's
        # event loop; off: none here. true/false are read as inline/off.
        value = {"true": "inline", "1": "inline", "false": "off", "0": "off"}.get(
            str(v).lower(), str(v).lower()
        )
        if value not in {"process", "inline", "off"}:
            raise ValueError("must be process, inline or off")
        return value

    @field_validator("log_format")
    @classmethod
    def _format(cls, v: str) -> str:
        v = v.lower()
        if v not in {"json", "console"}:
            raise ValueError("must be json or console")
        return v

    @field_validator("webhook_secrets")
    @classmethod
    def _secrets(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and not [s for s in v.get_secret_value().split(",") if s.strip()]:
            raise ValueError("must hold at least one non-empty secret")
        return v

    @property
    def host_is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


def load(**overrides) -> Settings:
    """Read settings once; raise ConfigError naming the variable on a bad value."""
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            name = ".".join(str(p) for p in err["loc"]) or "settings"
            problems.append(f"{name}: {err['msg']}")
        raise ConfigError("bad configuration: " + "; ".join(problems)) from None
    if settings.api_token is None and not settings.host_is_loopback:
        raise ConfigError(
            f"KAPSO_SINK_HOST={settings.host} is not a loopback address: "
            "set KAPSO_SINK_API_TOKEN to serve the query API there"
        )
    return settings


def secret_id(secret: bytes) -> str:
    """A short, non-reversible id for a secret: the first 8 hex digits of its SHA-256."""
    return hashlib.sha256(secret).hexdigest()[:8]


def webhook_secrets(settings: Settings) -> tuple[list[bytes], Path | None]:
    """The accepted webhook secrets, generating one into the data dir when none is configured.

    Returns the secrets and, when a file was used, its path (to be logged, never the value).
    """
    if settings.webhook_secrets is not None:
        raw = settings.webhook_secrets.get_secret_value()
        return [s.strip().encode() for s in raw.split(",") if s.strip()], None
    path = settings.data_dir / "webhook-secret"
    if not path.exists():
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process won the race
            pass
        else:
            with os.fdopen(fd, "w") as fh:
                fh.write("whsec_" + _secrets.token_hex(24) + "\n")
    value = path.read_text().strip()
    if not value:
        raise ConfigError(f"{path} is empty: delete it or set KAPSO_WEBHOOK_SECRETS")
    return [value.encode()], path
