"""A user:password@ or a token inside --endpoint, OSS_ENDPOINT or AWS_ENDPOINT_URL is refused:
the command fails naming the flag or variable, changes nothing, and the secret appears nowhere
a person or a log collector reads (stdout, stderr, events.jsonl). Against the real store, with
a version there to pull, so a command that did not refuse would have succeeded."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from modelcache.testing import ObjectStore
from tests.integration.cli.support import BUCKET, Cli, make_model

SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCY"
FILES = {"lora/20.safetensors": 64 * 1024, "vae/config.json": 700}


def with_userinfo(endpoint: str) -> str:
    return endpoint.replace("://", f"://modelcache:{SECRET}@", 1)


def with_token(endpoint: str) -> str:
    return f"{endpoint}/?X-Amz-Signature={SECRET}"


def flattened(text: str) -> str:
    """Output with line wraps and box drawing removed: a secret folded over two lines, or a
    message wrapped in a panel, reads as one."""
    return re.sub(r"[\s\u2500-\u257f]+", "", text)


def leaks(text: str) -> bool:
    """The secret, or any piece of it a parser cut at its `/` or `+`, is in `text`."""
    return any(piece in flattened(text) for piece in [SECRET, *re.split(r"[/+]", SECRET)])


def assert_refused_without_the_secret(cli: Cli, done: subprocess.CompletedProcess[str]) -> str:
    """The command failed, said why in words, and wrote the secret nowhere; returns its error."""
    assert done.returncode != 0, f"not refused:\n{done.stdout}\n{done.stderr}"
    for name, text in [("stdout", done.stdout), ("stderr", done.stderr)]:
        assert not leaks(text), f"the secret is in {name}:\n{text}"
    events = cli.root / "events.jsonl"
    if events.exists():
        assert not leaks(events.read_text()), "the secret is in events.jsonl"
    message = " ".join(re.sub(r"[\u2500-\u257f]", " ", done.stderr).split())
    assert "access-key settings" in message, message
    return message


def published(cli: Cli, prefix: str, tmp_path: Path, scheme: str) -> str:
    url = f"{scheme}://{BUCKET}/{prefix}"
    cli.run("publish", str(make_model(tmp_path / "v1", seed=3, sizes=FILES)), url, "-v", "v1")
    return url


@pytest.mark.parametrize("scheme", ["oss", "s3"])
def test_endpoint_flag_with_credentials_or_a_token_is_refused(
    cli: Cli, prefix: str, tmp_path: Path, object_store: ObjectStore, scheme: str
) -> None:
    url = published(cli, prefix, tmp_path, scheme)
    v2 = make_model(tmp_path / "v2", seed=4, sizes=FILES)
    for endpoint in (with_userinfo(object_store.endpoint), with_token(object_store.endpoint)):
        flag = ["--endpoint", endpoint]
        for command in (
            ["pull", url, "--name", "lora", "-v", "v1", *flag],
            ["publish", str(v2), url, "-v", "v2", *flag],
            ["versions", url, *flag],
        ):
            done = cli.run(*command, check=False)
            message = assert_refused_without_the_secret(cli, done)
            assert "--endpoint" in message
    listed = cli.run("versions", url).stdout
    assert "v1" in listed
    assert "v2" not in listed, "a refused publish published nothing"
    assert not cli.live().exists()
    assert not (cli.root / "models/default/lora/versions/v1").exists(), "nothing was pulled"


@pytest.mark.parametrize(
    ("scheme", "variable"),
    [("oss", "OSS_ENDPOINT"), ("s3", "AWS_ENDPOINT_URL"), ("s3", "AWS_ENDPOINT_URL_S3")],
)
def test_endpoint_variable_with_credentials_or_a_token_is_refused(
    cli: Cli, prefix: str, tmp_path: Path, object_store: ObjectStore, scheme: str, variable: str
) -> None:
    url = published(cli, prefix, tmp_path, scheme)
    for endpoint in (with_userinfo(object_store.endpoint), with_token(object_store.endpoint)):
        cli.env[variable] = endpoint
        for command in (
            ["pull", url, "--name", "lora", "-v", "v1"],
            ["use", "lora", "v1", "--source", url],
        ):
            done = cli.run(*command, check=False)
            message = assert_refused_without_the_secret(cli, done)
            assert f"{variable} " in message
    assert not cli.live().exists()
    assert not (cli.root / "models/default/lora/versions/v1").exists(), "nothing was pulled"
