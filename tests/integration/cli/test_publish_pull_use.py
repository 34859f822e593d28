"""Acceptance: publish -> pull -> use, sharing, rollback without download, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelcache.fs import StreamHasher
from modelcache.testing import ObjectStore
from modelcache.testing.ports import free_port
from tests.integration.cli.support import BUCKET, Cli, make_model, same_tree

V1_FILES = {
    "unet/48.safetensors": 3 * 1024 * 1024 + 11,
    "lora/20.safetensors": 1024 * 1024,
    "vae/config.json": 700,
    "tokenizer/vocab.txt": 5000,
}


@pytest.mark.parametrize("scheme", ["oss", "s3"])
def test_publish_pull_use_is_byte_identical(
    cli: Cli, prefix: str, tmp_path: Path, scheme: str
) -> None:
    url = f"{scheme}://{BUCKET}/{prefix}"
    v1 = make_model(tmp_path / "v1", seed=1, sizes=V1_FILES)
    cli.run("publish", str(v1), url, "--version", "v1")

    listed = json.loads(cli.run("versions", url, "--json").stdout)
    assert [v["version"] for v in listed["versions"]] == ["v1"]

    cli.run("use", "lora", "v1", "--source", url)
    assert cli.live().resolve().name == "v1"
    assert same_tree(v1, cli.live())

    refused = cli.run("publish", str(v1), url, "--version", "v1", check=False)
    assert refused.returncode != 0
    assert "already exists" in refused.stderr


def test_second_version_downloads_only_changed_files_and_rollback_downloads_nothing(
    cli: Cli, prefix: str, tmp_path: Path
) -> None:
    url = f"oss://{BUCKET}/{prefix}"
    v1 = make_model(tmp_path / "v1", seed=1, sizes=V1_FILES)
    v2 = make_model(tmp_path / "v2", seed=1, sizes=V1_FILES)
    changed = v2 / "lora/20.safetensors"
    changed.write_bytes(b"new lora weights" * 70_000)
    cli.run("publish", str(v1), url, "--version", "v1")
    cli.run("publish", str(v2), url, "--version", "v2")

    cli.run("use", "lora", "v1", "--source", url)
    fetched_before = len(cli.events("L3_FETCH"))
    cli.run("use", "lora", "v2")
    fetched = cli.events("L3_FETCH")[fetched_before:]
    assert [f["file"] for f in fetched] == ["lora/20.safetensors"]
    (pull_end,) = [e for e in cli.events("L3_PULL_END") if e["version"] == "v2"]
    assert pull_end["bytes_downloaded"] == changed.stat().st_size
    assert same_tree(v2, cli.live())

    events_before_rollback = len(cli.events())
    rolled = cli.run("rollback", "lora")
    assert "v2 -> v1" in rolled.stdout
    assert cli.live().resolve().name == "v1"
    assert same_tree(v1, cli.live())
    after = cli.events()[events_before_rollback:]
    assert [e["event"] for e in after] == ["L2_FLIP"]
    assert after[0]["rollback"] is True

    listing = json.loads(cli.run("ls", "--json").stdout)
    live = {(r["version"], r["live"], r["previous"]) for r in listing["versions"]}
    assert live == {("v1", True, False), ("v2", False, True)}


def test_object_changed_after_publishing_is_rejected_and_live_version_keeps_serving(
    cli: Cli, prefix: str, tmp_path: Path, object_store: ObjectStore
) -> None:
    url = f"oss://{BUCKET}/{prefix}"
    v1 = make_model(tmp_path / "v1", seed=1, sizes=V1_FILES)
    v2 = make_model(tmp_path / "v2", seed=2, sizes=V1_FILES)
    cli.run("publish", str(v1), url, "--version", "v1")
    cli.run("publish", str(v2), url, "--version", "v2")
    cli.run("use", "lora", "v1", "--source", url)

    tampered = bytearray((v2 / "lora/20.safetensors").read_bytes())
    tampered[1000] ^= 0xFF  # same size: only a checksum can tell
    object_store.s3_client().put_object(
        Bucket=BUCKET, Key=f"{prefix}/v2/lora/20.safetensors", Body=bytes(tampered)
    )
    failed = cli.run("use", "lora", "v2", check=False)
    assert failed.returncode != 0
    assert "Traceback" not in failed.stderr
    message = failed.stderr
    assert "lora/20.safetensors" in message
    expected, actual = StreamHasher(), StreamHasher()
    expected.update((v2 / "lora/20.safetensors").read_bytes())
    actual.update(bytes(tampered))
    assert str(expected.digest().crc64) in message or expected.digest().sha256 in message
    assert str(actual.digest().crc64) in message or actual.digest().sha256 in message

    assert cli.live().resolve().name == "v1"
    assert same_tree(v1, cli.live())
    assert not (cli.root / "models/default/lora/versions/v2").exists()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["pull", "ftp://host/x", "--name", "lora", "--version", "v1"], "unknown URL scheme 'ftp'"),
        (["pull", "oss://{bucket}/{prefix}", "--name", "lora", "--version", "v9"], "v9"),
        (
            ["pull", "oss://{bucket}/{prefix}", "--name", "lora", "--version", "../v1"],
            "invalid version",
        ),
        (
            ["pull", "oss://{bucket}/{prefix}", "--name", "Bad_Name", "--version", "v1"],
            "invalid model name",
        ),
        (["rollback", "lora"], "lora"),
    ],
)
def test_bad_input_is_one_line_non_zero_no_traceback(
    cli: Cli, prefix: str, args: list[str], needle: str
) -> None:
    argv = [a.format(bucket=BUCKET, prefix=prefix) for a in args]
    done = cli.run(*argv, check=False)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert needle in done.stderr
    assert done.stderr.startswith("error:"), done.stderr


def test_manifest_with_escaping_path_is_refused(
    cli: Cli, prefix: str, object_store: ObjectStore
) -> None:
    manifest = {
        "schemaVersion": 1,
        "version": "v1",
        "created": "2026-11-24T00:00:00Z",
        "files": [{"path": "../../etc/cron.d/evil", "size": 1, "sha256": "a" * 64, "crc64": "1"}],
    }
    object_store.s3_client().put_object(
        Bucket=BUCKET, Key=f"{prefix}/v1/manifest.json", Body=json.dumps(manifest).encode()
    )
    done = cli.run(
        "pull", f"oss://{BUCKET}/{prefix}", "--name", "lora", "--version", "v1", check=False
    )
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert "../../etc/cron.d/evil" in done.stderr
    assert not any(cli.root.rglob("evil"))


def test_unreachable_endpoint_is_named(cli: Cli, prefix: str) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    cli.env["OSS_ENDPOINT"] = dead
    done = cli.run(
        "pull", f"oss://{BUCKET}/{prefix}", "--name", "lora", "--version", "v1", check=False
    )
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert dead in done.stderr
