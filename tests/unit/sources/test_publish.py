"""Publish records only what the store holds: a file rewritten while it is published, or a
garbage index, fail before a manifest exists, so the version name is not burnt."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelcache.api.manifest import MIN_PIECE, Manifest, piece_size_for
from modelcache.sources import SourceError, VersionExists, open_source, publish, read_manifest
from modelcache.sources.publish import INDEX_LOCK, claim_key, manifest_key, read_index
from tests.strategies import json_values


def test_a_file_rewritten_while_it_is_published_records_nothing(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    weights = model / "w.bin"
    weights.write_bytes(b"a" * (4 * 1024 * 1024))
    client = open_source(f"file://{tmp_path / 'l3'}")
    rewritten = False

    def rewrite_once(nbytes: int) -> None:
        nonlocal rewritten
        if not rewritten:
            rewritten = True
            with weights.open("r+b") as handle:  # same size, other bytes: a training job
                handle.write(b"b" * 1024)

    with pytest.raises(SourceError, match="changed while it was being published"):
        publish(client, model, "v1", progress=rewrite_once)
    assert not client.exists(manifest_key("v1")), "no manifest: the name is not burnt"

    manifest = publish(client, model, "v1")  # once the file is stable
    assert read_manifest(client, "v1") == manifest


def test_a_garbage_index_fails_publish_before_anything_is_written(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "w.bin").write_bytes(b"weights")
    l3 = tmp_path / "l3"
    l3.mkdir()
    (l3 / "index.json").write_text("{not json")
    client = open_source(f"file://{l3}")
    with pytest.raises(SourceError, match="invalid index"):
        publish(client, model, "v1")
    assert sorted(p.name for p in l3.iterdir()) == ["index.json"]


def test_two_publishes_of_one_version_at_once_one_wins(tmp_path: Path) -> None:
    """Versions are immutable: of two publishes racing for `v1`, one claims the name and
    the other fails before it uploads anything; what is published is one directory whole."""
    client = open_source(f"file://{tmp_path / 'l3'}")
    dirs = []
    for n in range(2):
        directory = tmp_path / f"model{n}"
        directory.mkdir()
        for name in ("a.bin", "b.bin"):
            (directory / name).write_bytes(bytes([n]) * (2 * 1024 * 1024))
        dirs.append(directory)
    start = threading.Barrier(2)
    results: list[object] = [None, None]

    def run(n: int) -> None:
        start.wait()
        try:
            results[n] = publish(client, dirs[n], "v1")
        except VersionExists as refused:
            results[n] = refused

    threads = [threading.Thread(target=run, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    won = [n for n in range(2) if isinstance(results[n], Manifest)]
    lost = [n for n in range(2) if isinstance(results[n], VersionExists)]
    assert len(won) == 1, results
    assert len(lost) == 1, results
    published = read_manifest(client, "v1")
    winner = dirs[won[0]]
    for entry in published.files:
        assert client.get_bytes(f"v1/{entry.path}") == (winner / entry.path).read_bytes()
    assert client.exists(claim_key("v1")), "the claim is kept once published: no later taker"


def test_concurrent_publishes_of_different_versions_keep_every_index_entry(
    tmp_path: Path,
) -> None:
    client = open_source(f"file://{tmp_path / 'l3'}")
    versions = [f"v{n}" for n in range(8)]
    start = threading.Barrier(len(versions))
    errors: list[BaseException] = []

    def run(version: str) -> None:
        directory = tmp_path / version
        directory.mkdir()
        (directory / "w.bin").write_bytes(version.encode() * 1000)
        start.wait()
        try:
            publish(client, directory, version)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=run, args=(v,)) for v in versions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(e.version for e in read_index(client).versions) == versions
    assert not client.exists(INDEX_LOCK)


@pytest.mark.parametrize("special", ["fifo", "socket"])
def test_a_special_file_in_the_directory_is_refused_by_name(
    tmp_path: Path, special: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Skipped, it would publish a version without its weights; read, a FIFO blocks."""
    model = tmp_path / "model"
    (model / "unet").mkdir(parents=True)
    (model / "config.json").write_text("{}")
    weights = model / "unet" / "diffusion_pytorch_model.safetensors"
    if special == "fifo":
        os.mkfifo(weights)
    else:
        monkeypatch.chdir(weights.parent)  # a socket's path must be short
        bound = socket.socket(socket.AF_UNIX)
        bound.bind(weights.name)
    client = open_source(f"file://{tmp_path / 'l3'}")
    with pytest.raises(SourceError, match=r"model\.safetensors is a (FIFO|socket)"):
        publish(client, model, "v1")
    assert client.list_keys() == [], "refused before anything was claimed or written"


@settings(max_examples=60, deadline=None)
@given(
    record=st.binary(max_size=300)
    | json_values(st.sampled_from(["state", "token", "claimed", "x"])).map(
        lambda v: json.dumps(v).encode()
    )
)
def test_any_claim_record_found_refuses_the_publish_cleanly(
    tmp_path_factory: pytest.TempPathFactory, record: bytes
) -> None:
    """A claim record is read from the store: whatever it holds, a publish of that name is
    refused with VersionExists and writes nothing."""
    root = tmp_path_factory.mktemp("claimed")
    model = root / "model"
    model.mkdir()
    (model / "w.bin").write_bytes(b"weights")
    client = open_source(f"file://{root / 'l3'}")
    client.put_bytes(claim_key("v1"), record)
    with pytest.raises(VersionExists):
        publish(client, model, "v1")
    assert sorted(client.list_keys()) == [claim_key("v1")]
    assert client.get_bytes(claim_key("v1")) == record, "another's claim is left as it is"


def test_a_published_manifest_has_the_pieces_of_each_large_file(tmp_path: Path) -> None:
    """Schema 2: a file larger than MIN_PIECE carries the sha256 of each of its pieces, as
    the store now holds them; a small one carries none (its own sha256 is its one piece)."""
    model = tmp_path / "model"
    model.mkdir()
    large = os.urandom(2 * MIN_PIECE + 12345)  # three pieces, the last one short
    (model / "unet.safetensors").write_bytes(large)
    (model / "edge.bin").write_bytes(os.urandom(MIN_PIECE))  # exactly MIN_PIECE: no pieces
    (model / "config.json").write_text("{}")
    client = open_source(f"file://{tmp_path / 'l3'}")
    published = publish(client, model, "v1")
    manifest = read_manifest(client, "v1")
    assert manifest == published
    assert manifest.schema_version == 2
    entry = manifest.file("unet.safetensors")
    assert entry.pieces is not None
    assert entry.pieces.size == piece_size_for(len(large)) == MIN_PIECE
    stored = client.get_bytes("v1/unet.safetensors")
    assert entry.pieces.sha256 == tuple(
        hashlib.sha256(stored[start : start + MIN_PIECE]).hexdigest()
        for start in range(0, len(stored), MIN_PIECE)
    )
    assert entry.piece_count() == 3
    assert manifest.file("edge.bin").pieces is None
    assert manifest.file("config.json").pieces is None
