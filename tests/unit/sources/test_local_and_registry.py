"""file:// sources and the downloader over them: real files, no server."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelcache.api.manifest import ManifestFile
from modelcache.fs import StreamHasher
from modelcache.sources import (
    Credentials,
    InvalidSourceURL,
    ObjectChanged,
    ObjectNotFound,
    PullOptions,
    SourceError,
    VerificationError,
    download_file,
    open_source,
    parse_source_url,
)
from modelcache.sources.local import LocalClient
from modelcache.sources.resume import ResumeRecord, plan_parts, resume_path

KEY = "v1/unet/48.safetensors"


def entry_for(path: str, data: bytes) -> ManifestFile:
    hasher = StreamHasher()
    hasher.update(data)
    digest = hasher.digest()
    return ManifestFile(path=path, size=digest.size, sha256=digest.sha256, crc64=str(digest.crc64))


class Counted:
    """A thread-safe progress callback that adds up what it is told."""

    def __init__(self) -> None:
        self.total = 0
        self._lock = threading.Lock()

    def __call__(self, nbytes: int) -> None:
        with self._lock:
            self.total += nbytes


@pytest.fixture
def client(tmp_path: Path) -> LocalClient:
    source = open_source(f"file://{tmp_path / 'l3'}")
    assert isinstance(source, LocalClient)
    return source


def test_put_is_atomic_and_leaves_no_temp_files(client: LocalClient, tmp_path: Path) -> None:
    client.put_bytes("v1/manifest.json", b"{}")
    local = tmp_path / "weights.bin"
    local.write_bytes(os.urandom(5 * 1024 * 1024))
    seen = Counted()
    client.put_file(KEY, local, progress=seen)
    assert client.get_bytes("v1/manifest.json") == b"{}"
    assert (tmp_path / "l3" / KEY).read_bytes() == local.read_bytes()
    assert seen.total == local.stat().st_size
    names = [p.name for p in (tmp_path / "l3").rglob("*")]
    assert not [n for n in names if n.startswith(".")]  # no temporary file left beside


def test_a_put_that_cannot_replace_its_target_leaves_no_temp_file(
    client: LocalClient, tmp_path: Path
) -> None:
    """The write gets as far as the rename: a directory where the object goes refuses it,
    and the temporary file beside it goes too (a leftover would be listed as an object)."""
    (tmp_path / "l3" / "v1" / "manifest.json" / "inside").mkdir(parents=True)
    with pytest.raises(IsADirectoryError):
        client.put_bytes("v1/manifest.json", b"{}")
    assert sorted(p.name for p in (tmp_path / "l3" / "v1").iterdir()) == ["manifest.json"]


def test_head_range_and_etag_pinning(client: LocalClient) -> None:
    client.put_bytes(KEY, b"0123456789")
    info = client.head(KEY)
    assert info.size == 10
    assert b"".join(client.iter_range(KEY, 2, 7, etag=info.etag, chunk=2)) == b"23456"
    client.put_bytes(KEY, b"9876543210")  # replaced: same size, another version
    with pytest.raises(ObjectChanged):
        list(client.iter_range(KEY, 0, 10, etag=info.etag))


def test_missing_and_escaping_keys(client: LocalClient) -> None:
    with pytest.raises(ObjectNotFound):
        client.head("v1/nothing")
    with pytest.raises(ObjectNotFound):
        client.get_bytes("v1/nothing")
    assert not client.exists("v1/nothing")
    client.delete(["v1/nothing"])  # a missing key is not an error
    with pytest.raises(SourceError, match="outside"):
        client.get_bytes("../../etc/passwd")


def test_unknown_scheme_is_invalid() -> None:
    with pytest.raises(InvalidSourceURL, match="unknown URL scheme 'ftp'"):
        open_source("ftp://host/models")


def test_oss_without_endpoint_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OSS_ENDPOINT", raising=False)
    with pytest.raises(SourceError, match="OSS_ENDPOINT"):
        open_source("oss://bucket/prefix")


def test_credentials_never_show_in_a_client(monkeypatch: pytest.MonkeyPatch) -> None:
    secret, token = "never-print-this-secret", "never-print-this-token"
    credentials = Credentials("oss-cn-hangzhou.aliyuncs.com", "AKID", secret, token)
    for url in ("oss://bucket/prefix", "s3://bucket/prefix"):
        client = open_source(url, credentials)
        for text in (repr(client), str(client.__dict__), repr(credentials)):
            assert secret not in text
            assert token not in text


# -- the downloader over file:// ------------------------------------------------------------


def publish(client: LocalClient, data: bytes) -> ManifestFile:
    client.put_bytes(KEY, data)
    return entry_for("unet/48.safetensors", data)


def test_multi_part_download_is_byte_identical(client: LocalClient, tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 5)
    entry = publish(client, data)
    dest, seen = tmp_path / "tmp" / "blob", Counted()
    dest.parent.mkdir()
    options = PullOptions(concurrency=4, part_size=256 * 1024)
    digest = download_file(client, KEY, entry, dest, options=options, progress=seen)
    assert dest.read_bytes() == data
    assert (digest.sha256, digest.size) == (entry.sha256, entry.size)
    assert seen.total == len(data)
    assert not resume_path(dest).exists()


def test_zero_byte_file(client: LocalClient, tmp_path: Path) -> None:
    entry = publish(client, b"")
    dest = tmp_path / "blob"
    assert download_file(client, KEY, entry, dest).size == 0
    assert dest.read_bytes() == b""
    assert not resume_path(dest).exists()


def test_resume_fetches_only_unclaimed_parts(client: LocalClient, tmp_path: Path) -> None:
    data = os.urandom(1024 * 1024 + 3)
    entry = publish(client, data)
    part_size = 64 * 1024
    parts = plan_parts(len(data), part_size)
    claimed = {p.index for p in parts if p.index % 3 == 0}
    dest = tmp_path / "blob"
    with dest.open("wb") as partial:  # what an interrupted run leaves: claimed parts, holes
        partial.truncate(len(data))
        for part in parts:
            if part.index in claimed:
                partial.seek(part.start)
                partial.write(data[part.start : part.end])
    etag = client.head(KEY).etag
    record = ResumeRecord(KEY, etag, len(data), part_size, frozenset(claimed))
    resume_path(dest).write_bytes(record.to_json())
    seen = Counted()
    options = PullOptions(concurrency=3, part_size=part_size)
    download_file(client, KEY, entry, dest, options=options, progress=seen)
    assert dest.read_bytes() == data
    assert seen.total == sum(p.length for p in parts if p.index not in claimed)


@pytest.mark.parametrize("record", ["other-etag", "corrupt"])
def test_untrustworthy_record_means_a_full_download(
    client: LocalClient, tmp_path: Path, record: str
) -> None:
    data = os.urandom(512 * 1024)
    entry = publish(client, data)
    dest = tmp_path / "blob"
    dest.write_bytes(b"\0" * len(data))  # claimed as done below, but never written
    everything = frozenset(range(8))
    text = (
        ResumeRecord(KEY, "stale", len(data), 64 * 1024, everything).to_json()
        if record == "other-etag"
        else b'{"version": 1, "done": [0, 1'
    )
    resume_path(dest).write_bytes(text)
    seen = Counted()
    options = PullOptions(part_size=64 * 1024)
    download_file(client, KEY, entry, dest, options=options, progress=seen)
    assert dest.read_bytes() == data
    assert seen.total == len(data)


def test_modified_object_fails_verification_and_cleans_up(
    client: LocalClient, tmp_path: Path
) -> None:
    entry = publish(client, b"A" * 100_000)
    client.put_bytes(KEY, b"B" * 100_000)
    dest = tmp_path / "blob"
    with pytest.raises(VerificationError) as error:
        download_file(client, KEY, entry, dest, options=PullOptions(part_size=8192))
    assert error.value.what == "sha256"
    assert error.value.expected == entry.sha256
    assert error.value.actual == entry_for("x", b"B" * 100_000).sha256
    assert not dest.exists()
    assert not resume_path(dest).exists()


def test_size_mismatch_is_refused_before_any_byte(client: LocalClient, tmp_path: Path) -> None:
    entry = publish(client, b"A" * 1000)
    client.put_bytes(KEY, b"A" * 999)
    seen = Counted()
    with pytest.raises(VerificationError) as error:
        download_file(client, KEY, entry, tmp_path / "blob", progress=seen)
    assert (error.value.what, error.value.expected, error.value.actual) == ("size", "1000", "999")
    assert seen.total == 0


@given(
    scheme=st.sampled_from(["http", "https", "oss", "s3"]),
    user=st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=12),
    secret=st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=6, max_size=24),
)
def test_credentials_in_a_url_are_refused_and_never_echoed(
    scheme: str, user: str, secret: str
) -> None:
    url = f"{scheme}://{user}:{secret}@models.example/lora"
    with pytest.raises(InvalidSourceURL) as refused:
        parse_source_url(url)
    assert secret not in str(refused.value)
    assert "credentials in a URL are refused" in str(refused.value)
