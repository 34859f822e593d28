"""The docs' code blocks as tests run them: fenced blocks read from the markdown, each with
the marker that says how it is tested, split into commands, and run in an environment
the test supplies (a temp cwd, a store's endpoint, a cluster's kubeconfig).

A marker is an HTML comment on the line right above a block's opening fence (blank
lines between are allowed), invisible on the rendered page:

    <!-- doc-test: local NAME -->    run locally by tests/integration/docs/test_snippets.py
    <!-- doc-test: cluster NAME -->  run on the e2e cluster by tests/cluster/test_docs_snippets.py
    <!-- doc-test: skip REASON -->   not run, and why
    <!-- doc-test: file NAME -->     not code: the file NAME a later block uses (a manifest)

Every fence needs an info string (```sh, ```python, ```text, ```yaml, ...); a code block
(python, sh, bash, shell, console) needs a local, cluster or skip marker.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

REPO = Path(__file__).resolve().parents[3]
DOCS = ("README.md", "docs")  # README.md and every docs/*.md
CODE = frozenset({"python", "py", "sh", "bash", "shell", "console", "zsh"})
RUN_KINDS = ("local", "cluster", "skip")
MarkerKind = Literal["local", "cluster", "skip", "file"]

_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_MARKER_START = re.compile(r"^\s*<!--\s*doc-test\b")
_MARKER = re.compile(
    r"^\s*<!--\s*doc-test:\s*(?P<kind>local|cluster|skip|file)\s+(?P<value>\S.*?)\s*-->\s*$"
)
_HEREDOC = re.compile(
    r"<<(?P<dash>-?)\s*(?P<quote>['\"]?)(?P<word>[A-Za-z_][A-Za-z0-9_]*)(?P=quote)"
)


class DocError(ValueError):
    """A document whose blocks or markers cannot be read as the rules above say."""


@dataclass(frozen=True)
class Marker:
    kind: MarkerKind
    value: str  # a snippet's name, a reason, or a file name


@dataclass(frozen=True)
class Block:
    doc: str  # the document, relative to the repository
    line: int  # 1-based line of the opening fence
    info: str  # the info string's first word ("" when the fence has none)
    text: str  # the content, every line ending in "\n"
    marker: Marker | None

    @property
    def where(self) -> str:
        return f"{self.doc}:{self.line}"

    @property
    def is_code(self) -> bool:
        return self.info.lower() in CODE


def parse_marker(line: str, where: str) -> Marker | None:
    """The marker on `line`, None if the line is none; DocError if it is a malformed one."""
    if not _MARKER_START.match(line):
        return None
    found = _MARKER.match(line)
    if found is None:
        raise DocError(f"{where}: a doc-test marker reads `<!-- doc-test: KIND VALUE -->`")
    kind = found["kind"]
    assert kind in ("local", "cluster", "skip", "file")
    return Marker(kind, found["value"])


def parse_blocks(text: str, doc: str) -> list[Block]:
    """Every fenced code block of a CommonMark document, with the marker above it."""
    lines = text.splitlines()
    blocks: list[Block] = []
    pending: tuple[Marker, int] | None = None
    index = 0
    while index < len(lines):
        line = lines[index]
        where = f"{doc}:{index + 1}"
        opening = _FENCE.match(line)
        if opening is not None and not _bad_info(opening):
            block, index = _read_block(lines, index, opening, doc)
            marker = pending[0] if pending else None
            blocks.append(Block(doc, block[0], block[1], block[2], marker))
            pending = None
            continue
        marker = parse_marker(line, where)
        if marker is not None:
            if pending is not None:
                raise DocError(f"{doc}:{pending[1]}: a doc-test marker with no block under it")
            pending = (marker, index + 1)
        elif line.strip() and pending is not None:
            raise DocError(f"{doc}:{pending[1]}: a doc-test marker with no block under it")
        index += 1
    if pending is not None:
        raise DocError(f"{doc}:{pending[1]}: a doc-test marker with no block under it")
    return blocks


def _bad_info(opening: re.Match[str]) -> bool:
    """CommonMark: a backtick fence's info string may not contain a backtick."""
    return opening["fence"][0] == "`" and "`" in opening["info"]


def _read_block(
    lines: list[str], start: int, opening: re.Match[str], doc: str
) -> tuple[tuple[int, str, str], int]:
    fence, indent = opening["fence"], len(opening["indent"])
    closing = re.compile(rf"^ {{0,3}}{re.escape(fence[0])}{{{len(fence)},}}\s*$")
    body: list[str] = []
    for index in range(start + 1, len(lines)):
        if closing.match(lines[index]):
            info = opening["info"].strip().split(maxsplit=1)
            return (start + 1, info[0] if info else "", "".join(body)), index + 1
        body.append(_dedent(lines[index], indent) + "\n")
    raise DocError(f"{doc}:{start + 1}: a code block that is never closed")


def _dedent(line: str, indent: int) -> str:
    """CommonMark: as many leading spaces as the opening fence had are removed."""
    spaces = len(line) - len(line.lstrip(" "))
    return line[min(spaces, indent) :]


def documents() -> list[Path]:
    """README.md and docs/*.md."""
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def all_blocks() -> list[Block]:
    found: list[Block] = []
    for path in documents():
        found += parse_blocks(path.read_text(), str(path.relative_to(REPO)))
    return found


def marked(kind: MarkerKind) -> dict[str, Block]:
    """The blocks with a `kind` marker, by name; DocError for a name used twice."""
    named: dict[str, Block] = {}
    for block in all_blocks():
        if block.marker is None or block.marker.kind != kind:
            continue
        name = block.marker.value
        if name in named:
            raise DocError(f"{block.where}: {kind} {name!r} also names {named[name].where}")
        named[name] = block
    return named


def block(kind: MarkerKind, name: str) -> Block:
    found = marked(kind).get(name)
    if found is None:
        raise DocError(f"no block is marked `doc-test: {kind} {name}`")
    return found


def fill_in(text: str, placeholders: Mapping[str, str], where: str) -> str:
    """`text` with what the reader fills in (an endpoint, a mount point) replaced by the
    test's own; each placeholder must be there, so a changed doc fails here, by name."""
    for placeholder, value in placeholders.items():
        if placeholder not in text:
            raise DocError(f"{where}: the snippet no longer contains {placeholder!r}")
        text = text.replace(placeholder, value)
    return text


def commands(text: str) -> list[str]:
    """A shell snippet's commands, one per entry, as a person types them one after the
    other: continuation lines joined (the backslash-newline kept), a here-document kept
    with its command, comment-only and blank lines left out."""
    lines = text.splitlines()
    found: list[str] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        index += 1
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        command = [line]
        while command[-1].endswith("\\") and index < len(lines):
            command.append(lines[index])
            index += 1
        for heredoc in _HEREDOC.finditer("\n".join(command)):
            word, dash = heredoc["word"], heredoc["dash"]
            while index < len(lines):
                body = lines[index]
                command.append(body)
                index += 1
                if (body.lstrip("\t") if dash else body) == word:
                    break
            else:
                raise DocError(f"a here-document never ends with {word!r}")
        found.append("\n".join(command))
    return found


@dataclass(frozen=True)
class Ran:
    command: str
    returncode: int
    stdout: str
    stderr: str

    def check(self) -> Ran:
        assert self.returncode == 0, (
            f"`{self.command}` exited {self.returncode}\n"
            f"--- stdout\n{self.stdout[-4000:]}\n--- stderr\n{self.stderr[-4000:]}"
        )
        return self


def run_shell(script: str, *, cwd: Path, env: Mapping[str, str], timeout: float = 600) -> Ran:
    """Run `script` with bash as a person's shell would, stopping at the first failure."""
    result = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", script],
        cwd=cwd,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return Ran(script, result.returncode, result.stdout, result.stderr)


def base_env(home: Path, **extra: str) -> dict[str, str]:
    """A plain user environment: this venv's `modelcache` and `python` on PATH, a home of
    its own, nothing inherited that could point a command elsewhere."""
    venv_bin = Path(sys.executable).parent
    env = {
        "PATH": f"{venv_bin}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "TERM": "dumb",
        "NO_COLOR": "1",
        "COLUMNS": "200",
        "HF_HUB_OFFLINE": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    for name in ("TMPDIR", "MODELCACHE_CACHE_DIR", "XDG_CACHE_HOME"):
        if name in os.environ:
            env[name] = os.environ[name]
    env.update(extra)
    return env
