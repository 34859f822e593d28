"""A version name is claimed by one publish only, through the store's conditional write
(S3's If-None-Match, OSS's x-oss-forbid-overwrite), on the real SeaweedFS."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from modelcache.sources import Progress, SourceError, VersionExists, publish, read_manifest
from modelcache.sources.publish import claim_key, manifest_key
from modelcache.sources.s3 import S3ObjectClient
from modelcache.testing import ObjectStore
from tests.integration.sources.conftest import make_location


@pytest.mark.parametrize("scheme", ["oss", "s3", "file"])
def test_a_claimed_version_name_refuses_a_second_publish(
    scheme: str, store_env: ObjectStore, tmp_path: Path, http_root: tuple[Path, str]
) -> None:
    client = make_location(scheme, store_env, tmp_path, http_root).client
    model = tmp_path / "model"
    model.mkdir()
    (model / "w.bin").write_bytes(b"weights")
    assert client.put_bytes_if_absent(claim_key("v1"), b"{}")  # another publish holds v1
    assert not client.put_bytes_if_absent(claim_key("v1"), b"{}")
    with pytest.raises(VersionExists, match="being published"):
        publish(client, model, "v1")
    assert not client.exists("v1/w.bin"), "refused before it uploaded anything"

    client.delete([claim_key("v1")])  # the other publish is done (or its claim cleared)
    manifest = publish(client, model, "v1")
    assert read_manifest(client, "v1") == manifest
    assert client.exists(claim_key("v1")), "the claim stays: the name is used for good"
    with pytest.raises(VersionExists, match="already exists"):
        publish(client, model, "v1")


@pytest.mark.parametrize("size", [300 * 1024, 70 * 1024 * 1024])  # one PUT; multipart
def test_publish_checks_the_etag_of_what_s3_holds(
    size: int, store_env: ObjectStore, tmp_path: Path, http_root: tuple[Path, str]
) -> None:
    """On S3 the ETag is a checksum of the stored bytes: publish compares it with the file's
    (single-part MD5, or the MD5 of the parts' MD5s) before it records anything."""
    client = make_location("s3", store_env, tmp_path, http_root).client
    model = tmp_path / "model"
    model.mkdir()
    weights = model / "w.bin"
    weights.write_bytes(os.urandom(size))
    expected = client.expected_etag(weights)
    assert expected is not None
    publish(client, model, "v1")
    assert client.head("v1/w.bin").etag.strip('"').lower() == expected


class Corrupting(S3ObjectClient):
    """The real S3 client behind a link that flips a byte of every upload."""

    def put_file(self, key: str, path: Path, *, progress: Progress | None = None) -> None:
        damaged = path.with_name(path.name + ".sent")
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        damaged.write_bytes(bytes(data))
        try:
            super().put_file(key, damaged, progress=progress)
        finally:
            damaged.unlink()


def test_bytes_damaged_on_the_way_are_not_published(
    store_env: ObjectStore, tmp_path: Path, http_root: tuple[Path, str]
) -> None:
    real = make_location("s3", store_env, tmp_path, http_root).client
    client = object.__new__(Corrupting)
    client.__dict__.update(real.__dict__)
    model = tmp_path / "model"
    model.mkdir()
    (model / "w.bin").write_bytes(os.urandom(200 * 1024))
    with pytest.raises(SourceError, match="holds other bytes"):
        publish(client, model, "v1")
    assert not real.exists(manifest_key("v1")), "nothing recorded: the name is free"
    assert not real.exists(claim_key("v1"))
