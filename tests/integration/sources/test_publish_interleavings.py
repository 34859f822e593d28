"""A published version never changes: two publishes of one version, one paused before each
of its store calls in turn while the other runs whole in the gap, on the real SeaweedFS
(through oss2 and boto3) and on file://. Whatever the interleaving, one publish wins, the
other fails, and a reader of the version gets exactly the winner's bytes, then and after
any later publish or prune."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest

from modelcache.api.manifest import Manifest
from modelcache.sources import (
    ObjectClient,
    SourceError,
    VersionExists,
    list_versions,
    prune,
    publish,
    read_manifest,
)
from modelcache.sources.publish import claim_key
from modelcache.testing import ObjectStore
from tests.integration.sources.conftest import make_location

# Every call that reaches the store: a pause before any of them is a point where another
# publish can run.
STORE_CALLS = frozenset(
    {"head", "get_bytes", "put_bytes", "put_bytes_if_absent", "put_file", "delete", "exists"}
)


class PausingClient:
    """The real client, running `gap` once just before its `pause_at`-th store call."""

    def __init__(self, real: ObjectClient, pause_at: int, gap: Callable[[], None]) -> None:
        self._real = real
        self._pause_at = pause_at
        self._gap = gap
        self.calls = 0
        self.paused = False
        self.log: list[tuple[str, object]] = []  # (method, its first argument) per call

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._real, name)
        if name not in STORE_CALLS:
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            if self.calls == self._pause_at and not self.paused:
                self.paused = True
                self._gap()
            self.calls += 1
            self.log.append((name, args[0] if args else None))
            return attribute(*args, **kwargs)

        return call


def model_dir(root: Path, name: str, fill: bytes) -> Path:
    """A two-file model whose bytes say which publish made them."""
    directory = root / name
    (directory / "unet").mkdir(parents=True)
    (directory / "unet" / "w.safetensors").write_bytes(fill * 70_000)
    (directory / "config.json").write_bytes(b'{"by": "' + fill + b'"}')
    return directory


def reader_sees(client: ObjectClient, version: str) -> dict[str, bytes]:
    """What an agent pulling `version` gets: the manifest's files, each checked."""
    manifest = read_manifest(client, version)
    files = {}
    for entry in manifest.files:
        data = client.get_bytes(f"{version}/{entry.path}", limit=entry.size)
        assert hashlib.sha256(data).hexdigest() == entry.sha256, f"{entry.path} changed"
        files[entry.path] = data
    return files


def files_of(directory: Path) -> dict[str, bytes]:
    return {
        p.relative_to(directory).as_posix(): p.read_bytes()
        for p in directory.rglob("*")
        if p.is_file()
    }


def count_store_calls(client: ObjectClient, tmp_path: Path) -> int:
    """How many store calls one undisturbed publish makes (on a version of its own)."""
    counting = PausingClient(client, pause_at=-1, gap=lambda: None)
    publish(cast(ObjectClient, counting), model_dir(tmp_path, "probe", b"p"), "probe")
    return counting.calls


@pytest.mark.parametrize("scheme", ["oss", "s3", "file"])
def test_two_publishes_of_one_version_under_every_interleaving(
    scheme: str, store_env: ObjectStore, tmp_path: Path, http_root: tuple[Path, str]
) -> None:
    first_dir = model_dir(tmp_path, "first", b"A")
    second_dir = model_dir(tmp_path, "second", b"B")
    calls = count_store_calls(
        make_location(scheme, store_env, tmp_path, http_root).client, tmp_path
    )
    assert calls > 10, "a publish makes its claim, index, upload and manifest calls"
    for pause_at in range(calls + 1):  # + 1: the other one runs after the first returned
        client = make_location(scheme, store_env, tmp_path, http_root).client
        outcomes: dict[str, Manifest | SourceError] = {}

        def second(client: ObjectClient = client, outcomes: dict[str, Any] = outcomes) -> None:
            try:
                outcomes["second"] = publish(client, second_dir, "v1")
            except SourceError as error:
                outcomes["second"] = error

        pausing = PausingClient(client, pause_at, second)
        try:
            outcomes["first"] = publish(cast(ObjectClient, pausing), first_dir, "v1")
        except SourceError as error:
            outcomes["first"] = error
        if not pausing.paused:
            second()

        won = [name for name, outcome in outcomes.items() if isinstance(outcome, Manifest)]
        assert len(won) == 1, f"pause before call {pause_at}: {outcomes}"
        lost = next(outcome for name, outcome in outcomes.items() if name not in won)
        assert isinstance(lost, VersionExists), f"pause before call {pause_at}: {lost!r}"
        winner_dir = first_dir if won == ["first"] else second_dir
        assert read_manifest(client, "v1") == outcomes[won[0]]
        assert reader_sees(client, "v1") == files_of(winner_dir), f"pause before {pause_at}"

        with pytest.raises(VersionExists):  # any later publish
            publish(client, first_dir if won == ["second"] else second_dir, "v1")
        assert reader_sees(client, "v1") == files_of(winner_dir)
        assert [(e.version, e.state) for e in list_versions(client).versions] == [
            ("v1", "published")
        ]


@pytest.mark.parametrize("scheme", ["oss", "s3", "file"])
def test_a_pruned_version_name_is_never_published_again(
    scheme: str, store_env: ObjectStore, tmp_path: Path, http_root: tuple[Path, str]
) -> None:
    client = make_location(scheme, store_env, tmp_path, http_root).client
    publish(client, model_dir(tmp_path, "old", b"A"), "v1")
    publish(client, model_dir(tmp_path, "new", b"B"), "v2")
    assert prune(client, keep=1) == ["v1"]
    with pytest.raises(VersionExists, match="never reused"):
        publish(client, model_dir(tmp_path, "other", b"C"), "v1")
    assert not client.exists("v1/config.json"), "nothing was uploaded under the old name"


@pytest.mark.parametrize("scheme", ["s3", "file"])
def test_a_publish_whose_claim_was_deleted_by_hand_stops_before_its_next_write(
    scheme: str, store_env: ObjectStore, tmp_path: Path, http_root: tuple[Path, str]
) -> None:
    """The documented way out of an interrupted publish, used while one still runs: the
    publish that lost its claim writes nothing more, and the one that took it wins."""
    client = make_location(scheme, store_env, tmp_path, http_root).client
    first_dir, second_dir = model_dir(tmp_path, "first", b"A"), model_dir(tmp_path, "second", b"B")
    second: list[Manifest] = []
    probe = PausingClient(client, pause_at=-1, gap=lambda: None)
    publish(cast(ObjectClient, probe), first_dir, "probe")
    # the last moment before its first upload: when it checks that its claim is still its own
    before_upload = probe.log.index(("get_bytes", claim_key("probe")))

    def clear_and_publish() -> None:
        client.delete([claim_key("v1")])
        second.append(publish(client, second_dir, "v1"))

    pausing = PausingClient(client, pause_at=before_upload, gap=clear_and_publish)
    with pytest.raises(VersionExists, match="deleted or taken"):
        publish(cast(ObjectClient, pausing), first_dir, "v1")
    assert pausing.paused
    assert second, "the second publish won"
    assert reader_sees(client, "v1") == files_of(second_dir)
    assert client.exists(claim_key("v1")), "the winner's claim is kept"
    listed = [(e.version, e.state) for e in list_versions(client).versions]
    assert ("v1", "published") in listed, "the loser did not unlist the winner's version"
