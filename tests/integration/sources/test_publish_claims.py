"""A version name is claimed by one publish only, through the store's conditional write
(S3's If-None-Match, OSS's x-oss-forbid-overwrite), on the real SeaweedFS."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelcache.sources.publish import VersionExists, claim_key, publish, read_manifest
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
    assert not client.exists(claim_key("v1"))
    with pytest.raises(VersionExists):
        publish(client, model, "v1")
