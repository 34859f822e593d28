"""The standalone agent's desired state: a YAML file a person or config management writes.

The Kubernetes agent builds the same objects from its NodeCache, so the engine
never knows which mode it runs in.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from modelcache.api import (
    DEFAULT_ROOT,
    check_url,
    check_version,
    event_log_path,
    parse_model_ref,
)
from modelcache.fs import FileRefused, read_capped
from modelcache.problems import MAX_PROBLEMS
from modelcache.sources import parse_source_url

_NODE_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")


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
            check_url(url, "reload URL", "a reload call carries no credentials")
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


class PeerNode(_Strict):
    """Another node of this node's site, as its peer server is reached."""

    name: str
    url: str

    @field_validator("name")
    @classmethod
    def _node_name(cls, value: str) -> str:
        if not _NODE_NAME.fullmatch(value):
            raise ValueError(f"peer name {value[:64]!r} is not a node name (DNS-1123 subdomain)")
        return value

    @field_validator("url")
    @classmethod
    def _peer_url(cls, value: str) -> str:
        check_url(value, "peer URL", "peers authenticate with the peer token file")
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"peer URL {value!r} must be http:// or https://")
        return value.rstrip("/")


class PeersConfig(_Strict):
    """Fan-out (docs/fanout.md): serve what this node holds to the listed nodes of its site,
    and take pieces from them, so that each byte crosses the WAN once per site."""

    listen_host: str = "0.0.0.0"  # noqa: S104 - peers reach it from the site's other nodes
    listen_port: Annotated[int, Field(ge=0, le=65535)] = 9471
    token_file: Path
    nodes: list[PeerNode] = Field(default_factory=list)
    max_uploads: Annotated[int, Field(ge=1, le=64)] = 4
    max_upload_bytes_per_second: Annotated[float | None, Field(gt=0)] = None
    origin_streams: Annotated[int, Field(ge=1, le=256)] = 4
    # How long a peer that does not pull a blob (yet) is waited for, and how long one may
    # keep a piece pending without verifying more, before its pieces go elsewhere.
    absent_grace_seconds: Annotated[float, Field(ge=0)] = 10.0
    stall_timeout_seconds: Annotated[float, Field(gt=0)] = 30.0

    @field_validator("nodes")
    @classmethod
    def _distinct(cls, nodes: list[PeerNode]) -> list[PeerNode]:
        seen: set[str] = set()
        for node in nodes:
            if node.name in seen:
                raise ValueError(f"peer {node.name!r} is listed twice")
            seen.add(node.name)
        return nodes


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
    peers: PeersConfig | None = None

    @model_validator(mode="after")
    def _peers_know_this_node(self) -> AgentConfig:
        if self.peers is not None and self.node is None:
            raise ValueError("peers need this node's name: set `node`")
        return self

    @property
    def event_log_path(self) -> Path:
        return self.event_log or event_log_path(self.root)


MAX_CONFIG_BYTES = 1024**2  # a node's config lists its models; a megabyte is thousands
MAX_MESSAGE_CHARS = 200
"""The most of one validation message an error carries (a validator may quote a value)."""
# A key shown in an error: a config field is lowercase snake_case. Anything else (a line of
# a system file, a token) is some other file's contents and is never echoed.
_SHOWN_KEY = re.compile(r"[a-z][a-z0-9_]{0,39}")
# A quoted span in a PyYAML problem: a tag, an alias, a character of the file.
_QUOTED = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"")
_TOKEN_NAME = re.compile(r"<[a-z ]+>")  # '<block mapping start>': the parser's, not the file's
# The characters a YAML problem may name as they are (a tab is the usual mistake).
_KEPT_CHARACTERS = frozenset(
    ["\\t", " ", "!", "%", "&", "*", ":", ",", "[", "]", "{", "}", "|", ">", "@", "`", "#"]
)


def read_config(path: str | os.PathLike[str]) -> bytes:
    """The config file's bytes, bounded; the agent compares them to see a change. A FIFO,
    a directory or a device in its place is refused at once, never waited on."""
    try:
        return read_capped(path, MAX_CONFIG_BYTES, what="agent config")
    except FileRefused as error:
        raise ConfigError(str(error)) from None
    except OSError as error:
        raise ConfigError(f"cannot read agent config {path}: {error.strerror}") from None


def load_config(path: str | os.PathLike[str]) -> AgentConfig:
    """Read, parse and validate; errors name the file and the field."""
    return parse_config(read_config(path), path)


def parse_config(raw: bytes, path: str | os.PathLike[str]) -> AgentConfig:
    """Parse and validate bytes read from `path` (named in errors, its contents never: the
    path may be any file, a system file given by mistake)."""
    try:
        text = raw.decode()
    except UnicodeDecodeError as error:
        raise ConfigError(f"agent config {path} is not UTF-8 (byte {error.start})") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"agent config {path} is not valid YAML{yaml_problem(error)}") from None
    except RecursionError:
        raise ConfigError(f"agent config {path} is nested too deeply to be a config") from None
    if document is None:
        # Also what a file being rewritten in place can read like: never "no models".
        raise ConfigError(f"agent config {path} is empty (write it whole, then rename it in)")
    try:
        config = AgentConfig.model_validate(document)
    except ValidationError as error:
        raise ConfigError(f"agent config {path}: {validation_problems(error)}") from None
    names = [parse_model_ref(m.name) for m in config.models]
    if len(set(names)) != len(names):
        raise ConfigError(f"agent config {path}: a model is listed twice")
    return config


def yaml_problem(error: yaml.YAMLError) -> str:
    """' at line N, column M: <problem>' without the file's text: PyYAML's message quotes
    the offending line (its snippet), and its problem may quote a tag or an alias."""
    if isinstance(error, yaml.reader.ReaderError):
        return f" at character {error.position + 1}: a control character (#x{error.character:04x})"
    if not isinstance(error, yaml.MarkedYAMLError):
        return ""
    mark = error.problem_mark or error.context_mark
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = _QUOTED.sub(_keep_if_not_content, " ".join((error.problem or "").split()))
    return f"{where}: {problem}" if problem else where


def _keep_if_not_content(quoted: re.Match[str]) -> str:
    """A quoted token name or a single punctuation or space character says what is wrong
    without saying what the file holds; anything else is replaced."""
    inner = quoted.group()[1:-1]
    if _TOKEN_NAME.fullmatch(inner) or inner in _KEPT_CHARACTERS:
        return quoted.group()
    return "(not shown)"


def validation_problems(error: ValidationError) -> str:
    """`field: message; ...` (the first few), naming only keys a config could have."""
    problems = error.errors()
    shown = "; ".join(
        f"{_location(problem['loc'])}: {_bounded(problem['msg'])}"
        for problem in problems[:MAX_PROBLEMS]
    )
    more = len(problems) - MAX_PROBLEMS
    return shown + (f" (and {more} more)" if more > 0 else "")


def _location(loc: tuple[int | str, ...]) -> str:
    parts = [
        str(part) if isinstance(part, int) or _SHOWN_KEY.fullmatch(part) else "(a key not shown)"
        for part in loc
    ]
    return ".".join(parts) or "(root)"


def _bounded(message: str) -> str:
    text = " ".join(message.split())
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 1] + "…"
