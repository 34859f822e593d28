"""Rules for the names that become paths: versions, model names, files inside a version.

They are checked where input arrives (manifest, CLI, CRD) so that nothing can
write outside its directory under `versions/` or address an object outside its
prefix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath

# Matched with fullmatch: `$` alone would accept a trailing newline ("v1\n").
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+\-]{0,127}")
_DNS_LABEL = re.compile(r"[a-z0-9]([a-z0-9\-]{0,61}[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([a-z0-9\-.]{0,251}[a-z0-9])?")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
RESERVED_FILE_NAMES = frozenset({"manifest.json"})
MAX_PATH_BYTES = 1024
"""A file path inside a version, in UTF-8 bytes: with the cache root and
models/<ns>/<name>/versions/<staging dir>/ in front it stays far below PATH_MAX (4096)."""
MAX_SEGMENT_BYTES = 200
"""One file or directory name, in UTF-8 bytes: NAME_MAX (255) less room for the temporary
names derived from it (`.<name>.link-<8 hex>` when a file is re-linked, `.<name>.<12 hex>.claim`
in a file:// store: up to 20 bytes more)."""


SHOWN_CHARS = 80
"""How much of a refused name an error quotes: one line, whatever it was given."""


class InvalidName(ValueError):  # noqa: N818 - reads as what it is at the raise site
    """A version, model name or file path that would be unsafe or ambiguous as a path."""


def _quoted(name: str) -> str:
    """`name` quoted for an error, cut to SHOWN_CHARS (its length said when cut)."""
    if len(name) <= SHOWN_CHARS:
        return repr(name)
    return f"{name[:SHOWN_CHARS]!r}... ({len(name)} characters)"


def check_version(version: str) -> str:
    """A version is one path segment: letters, digits, `.`, `_`, `+`, `-`; never `/` or `..`."""
    if not _VERSION.fullmatch(version) or ".." in version:
        raise InvalidName(
            f"invalid version {_quoted(version)}: use 1-128 of letters, digits, '.', '_', '+', "
            "'-', starting with a letter or digit, without '/' or '..'"
        )
    return version


def check_relative_path(path: str) -> str:
    """A file path inside a version: relative, POSIX, no `..`, `.` or empty segments."""
    problem = _relative_path_problem(path)
    if problem is not None:
        raise InvalidName(f"invalid file path {_quoted(path)} in manifest: {problem}")
    return path


def _relative_path_problem(path: str) -> str | None:
    if not path:
        return "empty"
    if _SURROGATE.search(path):
        return "not valid UTF-8 (a name the filesystem gave undecodable bytes)"
    if len(path.encode()) > MAX_PATH_BYTES:
        return f"longer than {MAX_PATH_BYTES} bytes"
    if _CONTROL.search(path) or "\\" in path:
        return "contains a control character (newline, NUL...) or a backslash"
    if path.startswith("/"):
        return "absolute paths are not allowed"
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return "'..', '.' and empty segments are not allowed"
    longest = max(parts, key=lambda part: len(part.encode()))
    if len(longest.encode()) > MAX_SEGMENT_BYTES:
        return (
            f"a name of {len(longest.encode())} bytes: at most {MAX_SEGMENT_BYTES} per name "
            "(file systems allow 255, and temporary names add to it)"
        )
    if path in RESERVED_FILE_NAMES:
        return f"{path!r} is reserved for the manifest itself"
    if PurePosixPath(path).as_posix() != path:
        return "not in normal form"
    return None


def check_model_name(namespace: str, name: str) -> tuple[str, str]:
    """Namespace: a DNS label; name: a DNS subdomain (Kubernetes object name rules)."""
    if not _DNS_LABEL.fullmatch(namespace):
        raise InvalidName(f"invalid namespace {namespace!r}: use a DNS label (a-z, 0-9, '-')")
    if not _DNS_SUBDOMAIN.fullmatch(name) or ".." in name:
        raise InvalidName(f"invalid model name {name!r}: use a DNS subdomain (a-z, 0-9, '-', '.')")
    return namespace, name


def parse_model_ref(ref: str, default_namespace: str = "default") -> tuple[str, str]:
    """`name` or `namespace/name` -> (namespace, name), both checked."""
    namespace, sep, name = ref.partition("/")
    if not sep:
        namespace, name = default_namespace, ref
    return check_model_name(namespace, name)


@dataclass(frozen=True, order=True)
class ModelRef:
    """A model as Kubernetes names it: namespace (a DNS label) and name (a DNS subdomain).
    Checked on creation, since it becomes a path on every node."""

    namespace: str
    name: str

    def __post_init__(self) -> None:
        check_model_name(self.namespace, self.name)

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"

    @classmethod
    def parse(cls, ref: str, default_namespace: str = "default") -> ModelRef:
        """`name` or `namespace/name`."""
        return cls(*parse_model_ref(ref, default_namespace))
