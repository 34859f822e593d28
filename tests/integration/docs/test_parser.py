"""The snippet reader's two parsers, by property: fenced blocks with their markers come back
exactly as a document was written, commands split as a shell reads them, and any text at
all either parses or fails with DocError (never a crash, never a silent wrong block)."""

from __future__ import annotations

import re

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tests.integration.docs.snippets import (
    Block,
    DocError,
    Marker,
    commands,
    parse_blocks,
    parse_marker,
)

LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"  # what str.splitlines splits on
ONE_LINE = st.text(st.characters(codec="utf-8", exclude_characters=LINE_BREAKS), max_size=40)
SAFE = st.text(st.characters(codec="utf-8", exclude_characters="`~<" + LINE_BREAKS), max_size=30)
PROSE = SAFE.map(str.strip).filter(bool)
WORD = st.from_regex(r"[a-z][a-z0-9-]{0,10}", fullmatch=True)
MARKERS = st.builds(
    Marker,
    st.sampled_from(["local", "cluster", "skip", "file"]),
    st.lists(WORD, min_size=1, max_size=4).map(" ".join),
)


@st.composite
def fenced(draw: st.DrawFn) -> tuple[Marker | None, str, int, str, list[str]]:
    """(marker, fence, indent, info, body lines) of one block."""
    fence = draw(st.sampled_from("`~")) * draw(st.integers(3, 5))
    closing = re.compile(rf"^ {{0,3}}{re.escape(fence[0])}{{{len(fence)},}}\s*$")
    body_line = ONE_LINE.filter(lambda line: not closing.match(line))
    return (
        draw(st.none() | MARKERS),
        fence,
        draw(st.integers(0, 3)),
        draw(st.sampled_from(["", "sh", "python", "text", "yaml"])),
        draw(st.lists(body_line, max_size=5)),
    )


@st.composite
def documents(draw: st.DrawFn) -> tuple[str, list[Block]]:
    """A markdown document and the blocks it holds."""
    lines: list[str] = []
    expected: list[Block] = []
    for item in draw(st.lists(PROSE | fenced(), max_size=8)):
        lines.append("")
        if isinstance(item, str):
            lines.append(item)
            continue
        marker, fence, indent, info, body = item
        if marker is not None:
            lines += [f"<!-- doc-test: {marker.kind} {marker.value} -->", ""]
        lines.append(" " * indent + fence + info)
        opened = len(lines)
        lines += [" " * indent + line for line in body]
        lines.append(fence)
        text = "".join(line + "\n" for line in body)
        expected.append(Block("doc.md", opened, info, text, marker))
    return "\n".join(lines) + "\n", expected


@settings(max_examples=300)
@given(documents())
def test_blocks_and_markers_come_back_as_written(document: tuple[str, list[Block]]) -> None:
    text, expected = document
    assert parse_blocks(text, "doc.md") == expected


@settings(max_examples=300)
@given(st.text(max_size=300))
@example("```sh\nunclosed\n")
@example("<!-- doc-test: local a -->\n\nprose\n```sh\nx\n```\n")
@example("<!-- doc-test: bogus -->\n```sh\n```\n")
@example("<!-- doc-test: skip why -->\n")
def test_any_text_parses_or_fails_with_doc_error(text: str) -> None:
    refusal: str | None = None
    try:
        blocks = parse_blocks(text, "doc.md")
    except DocError as error:
        blocks, refusal = [], str(error)
    assert refusal is None or refusal.startswith("doc.md:"), "a refusal names doc and line"
    for block in blocks:
        assert text.splitlines()[block.line - 1].lstrip(" ")[:3] in ("```", "~~~")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("```sh\nls\n", "never closed"),
        ("<!-- doc-test: local a -->\nprose\n```sh\nls\n```\n", "no block under it"),
        ("<!-- doc-test: local a -->\n", "no block under it"),
        ("<!-- doc-test: run a -->\n```sh\nls\n```\n", "KIND VALUE"),
        ("<!-- doc-test: skip -->\n```sh\nls\n```\n", "KIND VALUE"),
    ],
)
def test_a_malformed_document_is_refused_by_line(text: str, problem: str) -> None:
    with pytest.raises(DocError, match=problem) as raised:
        parse_blocks(text, "doc.md")
    assert str(raised.value).startswith("doc.md:1:")


def test_a_marker_names_its_kind_and_value() -> None:
    assert parse_marker("<!-- doc-test: skip needs a GPU -->", "x") == Marker("skip", "needs a GPU")
    assert parse_marker("<!-- a comment -->", "x") is None


SIMPLE = st.from_regex(r"[a-z][a-z0-9 ./=-]{0,20}", fullmatch=True).map(str.rstrip)


@st.composite
def shell_command(draw: st.DrawFn) -> list[str]:
    """The lines of one command: plain, continued with backslashes, or with a here-doc."""
    first = draw(SIMPLE)
    shape = draw(st.sampled_from(["plain", "continued", "heredoc"]))
    if shape == "continued":
        rest = draw(st.lists(SIMPLE, min_size=1, max_size=3))
        return [first + " \\", *(f"  {line} \\" for line in rest[:-1]), f"  {rest[-1]}"]
    if shape == "heredoc":
        body = draw(st.lists(ONE_LINE.filter(lambda line: line != "EOF"), max_size=3))
        return [f"{first} <<'EOF'", *body, "EOF"]
    return [first]


@settings(max_examples=300)
@given(
    st.lists(st.tuples(shell_command(), st.sampled_from(["", "# a comment", "   "])), max_size=6)
)
def test_commands_split_as_a_shell_reads_them(parts: list[tuple[list[str], str]]) -> None:
    lines: list[str] = []
    for command, between in parts:
        lines += [*command, between]
    assert commands("\n".join(lines) + "\n") == ["\n".join(c) for c, _ in parts]


@settings(max_examples=300)
@given(st.text(max_size=200))
def test_commands_keep_every_line_that_is_not_a_comment(text: str) -> None:
    try:
        found = commands(text)
    except DocError:
        return
    kept = iter("\n".join(found).splitlines())
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            assert line in kept, f"{line!r} is lost"  # in order: `in` consumes the iterator
