"""The peer credential: a token file is read with its cap and refused when it could not
be a token; a presented token is checked against the file as it is now, so after a
rotation the old token is refused and the new one taken, without a restart."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from modelcache.fleet import MIN_TOKEN_CHARS, TokenError, TokenFile, bearer, new_token, read_token
from modelcache.fs import NotARegularFile, TooLarge


def _write(path: Path, text: str) -> None:
    """As a rotation writes it: a new file renamed over the old one."""
    temporary = path.with_name(path.name + ".new")
    temporary.write_text(text)
    temporary.replace(path)


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "peer-token"
    _write(path, new_token() + "\n")
    return path


def test_a_new_token_is_long_enough_and_reads_back_stripped(token_file: Path) -> None:
    token = new_token()
    assert len(token) >= MIN_TOKEN_CHARS
    _write(token_file, f"  {token}\n\n")
    assert read_token(token_file) == token


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "is empty"),
        (" \n\t", "is empty"),
        ("a" * (MIN_TOKEN_CHARS - 1), f"holds {MIN_TOKEN_CHARS - 1} characters"),
        ("a" * 30 + " " + "b" * 30, "outside urlsafe base64"),
        ("a" * 50 + "/+", "outside urlsafe base64"),
        ("\u00e9" * 50, "not ASCII"),
    ],
)
def test_a_file_that_cannot_hold_a_token_is_refused_clearly(
    token_file: Path, text: str, reason: str
) -> None:
    _write(token_file, text)
    with pytest.raises(TokenError, match=reason):
        read_token(token_file)
    with pytest.raises(TokenError, match=reason):
        TokenFile(token_file)


def test_the_file_is_capped_and_must_be_regular(tmp_path: Path) -> None:
    big = tmp_path / "big"
    big.write_text("a" * 5000)
    with pytest.raises(TooLarge):
        read_token(big)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(NotARegularFile):
        read_token(fifo)
    with pytest.raises(FileNotFoundError):
        TokenFile(tmp_path / "absent")


def test_only_the_file_s_token_as_a_bearer_is_taken(token_file: Path) -> None:
    tokens = TokenFile(token_file)
    token = read_token(token_file)
    assert tokens.check(bearer(token))
    assert tokens.check(f"bearer  {token} ")
    assert tokens.current() == token
    assert not tokens.check(bearer(new_token()))
    assert not tokens.check(f"Basic {token}")
    assert not tokens.check(token)
    assert not tokens.check(bearer(token[:-1]))
    assert not tokens.check(bearer(token + "x"))
    assert not tokens.check("Bearer \udcff\u00e9")
    assert not tokens.check("")


def test_after_a_rotation_the_old_token_is_refused_and_the_new_one_taken(
    token_file: Path,
) -> None:
    tokens = TokenFile(token_file)
    old = read_token(token_file)
    assert tokens.check(bearer(old))
    new = new_token()
    _write(token_file, new)
    assert not tokens.check(bearer(old))
    assert tokens.check(bearer(new))
    assert tokens.current() == new


def test_a_token_file_gone_bad_refuses_everyone_until_it_is_fixed(token_file: Path) -> None:
    tokens = TokenFile(token_file)
    token = read_token(token_file)
    _write(token_file, "short")
    assert not tokens.check(bearer(token))
    assert not tokens.check(bearer("short"))
    with pytest.raises(TokenError, match="no usable token"):
        tokens.current()
    token_file.unlink()
    assert not tokens.check(bearer(token))
    _write(token_file, token)
    assert tokens.check(bearer(token))
