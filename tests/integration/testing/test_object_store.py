"""The test object store is a real S3 server, reachable through boto3 and through oss2."""

from __future__ import annotations

import hashlib
import os

import oss2
import pytest

from modelcache.testing import ObjectStore

BUCKET = "store-tests"


@pytest.fixture(scope="module")
def bucket(object_store: ObjectStore) -> str:
    object_store.create_bucket(BUCKET)
    return BUCKET


def test_s3_put_then_oss2_ranged_get_and_head(object_store: ObjectStore, bucket: str) -> None:
    payload = os.urandom(3 * 1024 * 1024 + 17)
    put = object_store.s3_client().put_object(
        Bucket=bucket, Key="models/a/weights.bin", Body=payload
    )

    oss = object_store.oss_bucket(bucket)
    head = oss.head_object("models/a/weights.bin")
    assert head.content_length == len(payload)
    assert head.etag.lower() == put["ETag"].strip('"').lower() == hashlib.md5(payload).hexdigest()  # noqa: S324

    start, end = 1_000_000, 2_500_000
    ranged = oss.get_object("models/a/weights.bin", byte_range=(start, end))
    assert ranged.status == 206
    assert ranged.headers["Content-Range"] == f"bytes {start}-{end}/{len(payload)}"
    assert ranged.read() == payload[start : end + 1]


def test_oss2_put_then_s3_get(object_store: ObjectStore, bucket: str) -> None:
    payload = os.urandom(4096)
    object_store.oss_bucket(bucket).put_object("from-oss2/manifest.json", payload)
    got = object_store.s3_client().get_object(Bucket=bucket, Key="from-oss2/manifest.json")
    assert got["Body"].read() == payload


def test_missing_object_is_a_not_found_error(object_store: ObjectStore, bucket: str) -> None:
    with pytest.raises(oss2.exceptions.NoSuchKey):
        object_store.oss_bucket(bucket).get_object("does/not/exist")


def test_a_stopped_store_leaves_no_sockets_in_tmp() -> None:
    """weed makes unix sockets in /tmp for its servers; the store removes its own."""
    with ObjectStore() as store:
        store.create_bucket("sockets")
        made = store.sockets()
        assert made, "weed made its sockets (else this test checks nothing)"
    assert store.sockets() == []
    assert not any(path.exists() for path in made)
