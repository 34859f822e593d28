"""The standalone agent's desired state: a YAML file a person or config management writes.

The Kubernetes agent builds the same objects from its NodeCache, so the engine
never knows which mode it runs in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from modelcache.api.names import check_version, parse_model_ref
from modelcache.api.problems import one_line
from modelcache.sources.base import parse_source_url

DEFAULT_ROOT = Path("/var/lib/modelcache")


class ConfigError(ValueError):
    """The config file is missing, not YAML, or names something invalid; says which field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelConfig(_Strict):
    """One model this node must hold, and which version must be live."""

    name: str
    source: str
    version: str
    prefetch: list[str] = Field(default_factory=list)
    pin: list[str] = Field(default_factory=list)
    retain: Annotated[int, Field(ge=1)] = 5
    reload: list[str] = Field(default_factory=list)
    reload_timeout_seconds: Annotated[float, Field(gt=0)] = 30.0

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        parse_model_ref(value)
        return value

    @field_validator("source")
    @classmethod
    def _source(cls, value: str) -> str:
        parse_source_url(value)
        return value

    @field_validator("version")
    @classmethod
    def _version(cls, value: str) -> str:
        return check_version(value)

    @field_validator("prefetch", "pin")
    @classmethod
    def _versions(cls, values: list[str]) -> list[str]:
        return [check_version(v) for v in values]

    @field_validator("reload")
    @classmethod
    def _reload_urls(cls, values: list[str]) -> list[str]:
        for url in values:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"reload URL {url!r} must be http:// or https://")
        return values


class PullConfig(_Strict):
    concurrency: Annotated[int, Field(ge=1, le=256)] = 16
    part_size_bytes: Annotated[int, Field(ge=64 * 1024)] = 8 * 1024**2
    max_bytes_per_second: Annotated[float | None, Field(gt=0)] = None
    # A download gives up after this long without a byte (the agent retries it later).
    stall_timeout_seconds: Annotated[float, Field(gt=0)] = 120.0


class VerifyConfig(_Strict):
    """Continuous re-verification: the case's nightly checksum check, spread out and cheap."""

    enabled: bool = True
    max_bytes_per_second: Annotated[float, Field(gt=0)] = 64 * 1024**2
    pass_interval_seconds: Annotated[float, Field(ge=0)] = 24 * 3600
    repair: bool = True


class AgentConfig(_Strict):
    root: Path = DEFAULT_ROOT
    node: str | None = None
    metrics_host: str = "0.0.0.0"  # noqa: S104 - scraped by Prometheus from outside the node
    metrics_port: Annotated[int | None, Field(ge=0, le=65535)] = 9400
    event_log: Path | None = None
    poll_seconds: Annotated[float, Field(gt=0)] = 2.0
    resync_seconds: Annotated[float, Field(gt=0)] = 60.0
    high_watermark: Annotated[float, Field(gt=0, le=1)] = 0.95
    pull: PullConfig = PullConfig()
    verify: VerifyConfig = VerifyConfig()
    models: list[ModelConfig] = Field(default_factory=list)

    @property
    def event_log_path(self) -> Path:
        return self.event_log or self.root / "events.jsonl"


MAX_CONFIG_BYTES = 1024**2  # a node's config lists its models; a megabyte is thousands


def read_config(path: Path) -> bytes:
    """The config file's bytes, bounded; the agent compares them to see a change."""
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as error:
        raise ConfigError(f"cannot read agent config {path}: {error.strerror}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"agent config {path} is larger than {MAX_CONFIG_BYTES} bytes")
    return data


def load_config(path: Path) -> AgentConfig:
    """Read, parse and validate; errors name the file and the field."""
    return parse_config(read_config(path), path)


def parse_config(raw: bytes, path: Path) -> AgentConfig:
    """Parse and validate bytes read from `path` (named in errors)."""
    try:
        text = raw.decode()
    except UnicodeDecodeError as error:
        raise ConfigError(f"agent config {path} is not UTF-8 (byte {error.start})") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = " ".join(str(getattr(error, "problem", None) or error).split())
        raise ConfigError(f"agent config {path} is not valid YAML{where}: {problem}") from None
    except RecursionError:
        raise ConfigError(f"agent config {path} is nested too deeply to be a config") from None
    if document is None:
        # Also what a file being rewritten in place can read like: never "no models".
        raise ConfigError(f"agent config {path} is empty (write it whole, then rename it in)")
    try:
        config = AgentConfig.model_validate(document)
    except ValidationError as error:
        raise ConfigError(f"agent config {path}: {one_line(error)}") from None
    names = [parse_model_ref(m.name) for m in config.models]
    if len(set(names)) != len(names):
        raise ConfigError(f"agent config {path}: a model is listed twice")
    return config
