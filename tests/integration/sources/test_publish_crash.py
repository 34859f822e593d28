"""A publish killed with SIGKILL at any point loses no version from the index, on the real
SeaweedFS (through oss2 and boto3) and on file://: the index lists a version before its
manifest exists, and every reader settles it by the manifest."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from modelcache.api.manifest import INDEX_NAME, VersionIndex
from modelcache.sources import (
    ObjectClient,
    SourceError,
    VersionExists,
    list_versions,
    prune,
    publish,
    read_manifest,
    rebuild_index,
)
from modelcache.sources.publish import claim_key, manifest_key
from modelcache.testing import ObjectStore
from tests.integration.sources.conftest import make_location

# The child publishes through the real client and kills itself with SIGKILL the moment
# the store has acknowledged the write named on its command line.
CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from modelcache.sources import open_source, publish

    url, directory, version, fatal = sys.argv[1:]
    client = open_source(url)
    cls = type(client)

    def die_after(name):
        real = getattr(cls, name)
        def wrapped(self, key, *args, **kwargs):
            result = real(self, key, *args, **kwargs)
            if key == fatal:
                os.kill(os.getpid(), signal.SIGKILL)
            return result
        setattr(cls, name, wrapped)

    for name in ("put_bytes", "put_bytes_if_absent", "put_file"):
        die_after(name)
    publish(client, Path(directory), version)
    """
)


def killed_publish(client: ObjectClient, model: Path, version: str, after: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, client.url.raw, str(model), version, after],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == -9, f"the publish was not killed after {after}: {done.stderr}"


def model_dir(tmp_path: Path, name: str, data: bytes) -> Path:
    model = tmp_path / name
    model.mkdir()
    (model / "w.bin").write_bytes(data)
    return model


@pytest.mark.parametrize("scheme", ["oss", "s3", "file"])
def test_a_publish_killed_after_its_manifest_leaves_the_version_listed(
    scheme: str, store_env: ObjectStore, tmp_path: Path, http_root: tuple[Path, str]
) -> None:
    client = make_location(scheme, store_env, tmp_path, http_root).client
    publish(client, model_dir(tmp_path, "m0", b"zero"), "v0")
    killed_publish(client, model_dir(tmp_path, "m1", b"one"), "v1", after=manifest_key("v1"))

    raw = VersionIndex.from_json(client.get_bytes(INDEX_NAME))
    assert [(e.version, e.state) for e in raw.versions] == [
        ("v0", "published"),
        ("v1", "publishing"),
    ], "listed before its manifest was written"
    listed = list_versions(client)
    assert [(e.version, e.state) for e in listed.versions] == [
        ("v0", "published"),
        ("v1", "published"),
    ], "its manifest exists: a reader sees it published"
    entry = listed.entry("v1")
    assert entry is not None
    assert (entry.files, entry.size) == (1, 3)
    assert read_manifest(client, "v1").total_size == 3

    publish(client, model_dir(tmp_path, "m2", b"two"), "v2")
    written = VersionIndex.from_json(client.get_bytes(INDEX_NAME))
    assert [(e.version, e.state) for e in written.versions] == [
        ("v0", "published"),
        ("v1", "published"),
        ("v2", "published"),
    ], "the next write of the index settles it"
    assert prune(client, keep=1) == ["v1", "v0"], "prune sees it too"


@pytest.mark.parametrize("scheme", ["s3", "file"])
def test_a_publish_killed_before_its_manifest_publishes_nothing(
    scheme: str, store_env: ObjectStore, tmp_path: Path, http_root: tuple[Path, str]
) -> None:
    client = make_location(scheme, store_env, tmp_path, http_root).client
    model = model_dir(tmp_path, "m1", b"one")
    killed_publish(client, model, "v1", after="v1/w.bin")

    listed = list_versions(client)
    assert [(e.version, e.state) for e in listed.versions] == [("v1", "publishing")]
    assert not client.exists(manifest_key("v1")), "nothing an agent would pull"
    with pytest.raises(VersionExists, match="interrupted"):
        publish(client, model, "v1")

    client.delete([claim_key("v1")])  # as the error says
    assert list_versions(client).versions == [], "no manifest, no claim: not a version"
    publish(client, model, "v1")
    assert [(e.version, e.state) for e in list_versions(client).versions] == [("v1", "published")]
    assert json.loads(client.get_bytes(INDEX_NAME))["versions"][0]["state"] == "published"


@pytest.mark.parametrize("scheme", ["oss", "s3", "file", "http"])
def test_an_index_deleted_by_hand_is_rebuilt_from_the_manifests(
    scheme: str, store_env: ObjectStore, tmp_path: Path, http_root: tuple[Path, str]
) -> None:
    location = make_location(scheme, store_env, tmp_path, http_root)
    client, writer = location.client, location.writer
    for n, version in enumerate(["v1", "v2"]):
        publish(writer, model_dir(tmp_path, version, b"x" * (n + 1)), version)
    writer.delete([INDEX_NAME])
    assert list_versions(client).versions == []

    if scheme in ("oss", "http"):  # oss2 cannot parse SeaweedFS's listing; http has none
        with pytest.raises(SourceError, match="cannot be listed"):
            rebuild_index(client)
        rebuilt = rebuild_index(writer, ["v1", "v2"]).index
    else:
        rebuilt = rebuild_index(client).index
    assert [(e.version, e.state, e.size) for e in rebuilt.versions] == [
        ("v1", "published", 1),
        ("v2", "published", 2),
    ]
    assert list_versions(client) == rebuilt


@pytest.mark.parametrize("scheme", ["s3", "file"])
def test_a_rebuild_skips_garbage_manifests_and_rebuilds_from_the_rest(
    scheme: str, store_env: ObjectStore, tmp_path: Path, http_root: tuple[Path, str]
) -> None:
    client = make_location(scheme, store_env, tmp_path, http_root).client
    for n, version in enumerate(["v1", "v2", "v3", "v4"]):
        publish(client, model_dir(tmp_path, version, b"x" * (n + 1)), version)
    client.put_bytes(manifest_key("v2"), b"{not json")
    client.put_bytes(manifest_key("v3"), b'{"schemaVersion": 1, "version": "v9"}')
    client.put_bytes(INDEX_NAME, b"\x00garbage")

    rebuilt = rebuild_index(client)
    assert [version for version, _ in rebuilt.skipped] == ["v2", "v3"]
    assert all("invalid manifest" in why or "says version" in why for _, why in rebuilt.skipped)
    assert [(e.version, e.size) for e in rebuilt.index.versions] == [("v1", 1), ("v4", 4)]
    assert list_versions(client) == rebuilt.index, "written: every reader sees it"
