"""The downloader against real servers: SeaweedFS via oss2 and boto3, a directory, HTTP."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from modelcache.api.manifest import ManifestFile, Pieces, piece_size_for
from modelcache.fs import StreamHasher
from modelcache.sources import (
    Credentials,
    ObjectChanged,
    ObjectClient,
    ObjectNotFound,
    PullCancelled,
    PullOptions,
    RateLimiter,
    SourceReadOnly,
    SourceUnreachable,
    VerificationError,
    download_file,
    open_source,
    oss,
    s3,
)
from modelcache.sources.resume import Part, ResumeRecord, plan_parts, resume_path
from modelcache.testing import ObjectStore
from modelcache.testing.ports import free_port
from tests.integration.sources.conftest import BUCKET, Location, RangeServer, make_location

MiB = 1024 * 1024
KEY = "v1/unet/48.safetensors"
PATH = "unet/48.safetensors"


def entry_for(data: bytes, path: str = PATH) -> ManifestFile:
    hasher = StreamHasher()
    hasher.update(data)
    digest = hasher.digest()
    return ManifestFile(path=path, size=digest.size, sha256=digest.sha256, crc64=str(digest.crc64))


def pieced_entry_for(data: bytes, path: str = PATH) -> ManifestFile:
    """The entry publish writes for `data` (schema 2): with the sha256 of each piece."""
    piece_size = piece_size_for(len(data))
    hasher = StreamHasher(piece_size)
    hasher.update(data)
    digest = hasher.digest()
    pieces = Pieces(size=piece_size, sha256=digest.pieces)
    return entry_for(data, path).model_copy(update={"pieces": pieces})


class Counted:
    """A thread-safe progress callback; `then` runs after each call (to change the object)."""

    def __init__(self) -> None:
        self.total = 0
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self, nbytes: int) -> None:
        with self._lock:
            self.total += nbytes
            self.calls += 1
            calls = self.calls
        self.then(calls)

    def then(self, calls: int) -> None:
        """Hook for tests."""


def test_multi_part_download_is_byte_identical(location: Location, tmp_path: Path) -> None:
    data = os.urandom(20 * MiB + 123)
    location.put(KEY, data)
    dest, seen = tmp_path / "blob", Counted()
    options = PullOptions(concurrency=8, part_size=MiB)
    digest = download_file(
        location.client, KEY, entry_for(data), dest, options=options, progress=seen
    )
    assert dest.read_bytes() == data
    assert digest.sha256 == entry_for(data).sha256
    assert seen.total == len(data)
    assert not resume_path(dest).exists()


def test_zero_byte_file(location: Location, tmp_path: Path) -> None:
    location.put(KEY, b"")
    dest = tmp_path / "blob"
    assert download_file(location.client, KEY, entry_for(b""), dest).size == 0
    assert dest.read_bytes() == b""
    assert not resume_path(dest).exists()


def test_object_modified_after_the_manifest_fails_verification(
    location: Location, tmp_path: Path
) -> None:
    original = os.urandom(3 * MiB)
    tampered = bytearray(original)
    tampered[MiB + 1] ^= 0xFF  # same size: only a checksum can tell
    location.put(KEY, bytes(tampered))
    dest = tmp_path / "blob"
    options = PullOptions(part_size=MiB)
    with pytest.raises(VerificationError) as error:
        download_file(location.client, KEY, entry_for(original), dest, options=options)
    assert error.value.what == "sha256"
    message = str(error.value)
    assert PATH in message
    assert entry_for(original).sha256 in message
    assert entry_for(bytes(tampered)).sha256 in message
    assert not dest.exists()
    assert not resume_path(dest).exists()


def test_object_of_another_size_is_refused_before_downloading(
    location: Location, tmp_path: Path
) -> None:
    location.put(KEY, b"x" * 1000)
    seen = Counted()
    with pytest.raises(VerificationError) as error:
        download_file(location.client, KEY, entry_for(b"y" * 999), tmp_path / "blob", progress=seen)
    assert (error.value.what, error.value.expected, error.value.actual) == ("size", "999", "1000")
    assert seen.total == 0


class ChangeOnce(Counted):
    """Replaces the object (same size) right after the first chunk arrived."""

    def __init__(self, location: Location, new: bytes) -> None:
        super().__init__()
        self.location, self.new = location, new

    def then(self, calls: int) -> None:
        if calls == 1:
            self.location.put(KEY, self.new)


@pytest.mark.parametrize("manifest_of", ["new", "old"])
def test_object_replaced_mid_download_restarts_on_the_new_version(
    location: Location, tmp_path: Path, manifest_of: str
) -> None:
    old, new = os.urandom(8 * MiB), os.urandom(8 * MiB)
    location.put(KEY, old)
    expected = entry_for(new if manifest_of == "new" else old)
    dest = tmp_path / "blob"
    changer = ChangeOnce(location, new)  # one worker: no part can finish during the change
    options = PullOptions(concurrency=1, part_size=MiB)
    if manifest_of == "new":
        download_file(location.client, KEY, expected, dest, options=options, progress=changer)
        assert dest.read_bytes() == new  # never a mix of the two versions
        assert changer.total > len(new)  # the first attempt's bytes were thrown away
    else:
        with pytest.raises(VerificationError) as error:
            download_file(location.client, KEY, expected, dest, options=options, progress=changer)
        assert (error.value.expected, error.value.actual) == (
            entry_for(old).sha256,
            entry_for(new).sha256,
        )
        assert not dest.exists()


class ChangeAlways(Counted):
    def __init__(self, location: Location) -> None:
        super().__init__()
        self.location = location

    def then(self, calls: int) -> None:
        if calls <= 20:
            self.location.put(KEY, os.urandom(4 * MiB))


def test_object_that_keeps_changing_fails_clearly(location: Location, tmp_path: Path) -> None:
    data = os.urandom(4 * MiB)
    location.put(KEY, data)
    dest = tmp_path / "blob"
    options = PullOptions(concurrency=1, part_size=MiB // 2)
    with pytest.raises(ObjectChanged, match="changed 2 times"):
        download_file(
            location.client,
            KEY,
            entry_for(data),
            dest,
            options=options,
            progress=ChangeAlways(location),
        )
    assert not dest.exists()
    assert not resume_path(dest).exists()


def test_missing_object_is_not_found(location: Location, tmp_path: Path) -> None:
    with pytest.raises(ObjectNotFound):
        download_file(location.client, "v1/none.bin", entry_for(b"x"), tmp_path / "blob")
    with pytest.raises(ObjectNotFound):
        location.client.get_bytes("v1/manifest.json")
    assert not location.client.exists("v1/manifest.json")


def test_small_objects_round_trip(location: Location) -> None:
    if not location.client.writable:
        with pytest.raises(SourceReadOnly):
            location.client.put_bytes("index.json", b"{}")
        with pytest.raises(SourceReadOnly):
            location.client.delete(["index.json"])
        return
    location.client.put_bytes("index.json", b'{"versions": []}')
    assert location.client.get_bytes("index.json") == b'{"versions": []}'
    location.client.delete(["index.json", "never-there.json"])
    assert not location.client.exists("index.json")


@pytest.mark.parametrize("scheme", ["oss", "s3"])
def test_large_upload_goes_multipart_and_downloads_back(
    scheme: str,
    store_env: ObjectStore,
    tmp_path: Path,
    http_root: tuple[Path, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    backend = oss if scheme == "oss" else s3
    monkeypatch.setattr(backend, "MULTIPART_THRESHOLD", MiB)
    monkeypatch.setattr(backend, "PART_SIZE", 5 * MiB)
    location = make_location(scheme, store_env, tmp_path, http_root)
    local = tmp_path / "big.bin"
    local.write_bytes(os.urandom(12 * MiB + 1))
    sent = Counted()
    location.client.put_file(KEY, local, progress=sent)
    assert sent.total == local.stat().st_size
    dest = tmp_path / "blob"
    download_file(location.client, KEY, entry_for(local.read_bytes()), dest)
    assert dest.read_bytes() == local.read_bytes()


def breaking_source(
    server: RangeServer, prefix: str, data: bytes, breaks: int
) -> tuple[ObjectClient, Path]:
    """`data` served over http at `KEY`, its next `breaks` responses cut off halfway; the
    client, and the served file (`server.faults` counts down its breaks left)."""
    served = (server.root / prefix / KEY).resolve()
    served.parent.mkdir(parents=True)
    served.write_bytes(data)
    server.faults[served] = breaks
    return open_source(f"{server.url}/{prefix}"), served


@pytest.mark.parametrize("retries", [0, 3])
def test_broken_responses_are_retried_from_the_last_byte(
    http_server: RangeServer, tmp_path: Path, retries: int
) -> None:
    data = os.urandom(4 * MiB)
    prefix = f"flaky-{retries}-{time.monotonic_ns()}"
    client, served = breaking_source(http_server, prefix, data, breaks=3)
    dest, seen = tmp_path / "blob", Counted()
    options = PullOptions(concurrency=1, part_size=2 * MiB, retries=retries)
    if retries == 0:
        with pytest.raises(SourceUnreachable, match="flaky"):
            download_file(client, KEY, entry_for(data), dest, options=options, progress=seen)
        return
    download_file(client, KEY, entry_for(data), dest, options=options, progress=seen)
    assert dest.read_bytes() == data
    assert seen.total == len(data)  # retries continued where the broken responses stopped
    assert http_server.faults[served] == 0


# -- unreachable endpoints and secrets --------------------------------------------------------


@pytest.mark.parametrize("scheme", ["oss", "s3", "http"])
def test_unreachable_endpoint_is_named(
    scheme: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("OSS_ENDPOINT", dead)
    monkeypatch.setenv("AWS_ENDPOINT_URL", dead)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "modelcache")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "modelcache-secret")
    url = f"{dead}/models" if scheme == "http" else f"{scheme}://{BUCKET}/models"
    client = open_source(url)
    with pytest.raises(SourceUnreachable) as error:
        download_file(
            client, KEY, entry_for(b"x"), tmp_path / "blob", options=PullOptions(retries=0)
        )
    assert dead in str(error.value)


@pytest.mark.parametrize("scheme", ["oss", "s3"])
def test_secrets_stay_out_of_errors(scheme: str, monkeypatch: pytest.MonkeyPatch) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    secret, token = "never-print-this-secret", "never-print-this-token"
    client = open_source(f"{scheme}://{BUCKET}/models", Credentials(dead, "AKID", secret, token))
    with pytest.raises(SourceUnreachable) as error:
        client.head(KEY)
    for text in (str(error.value), repr(error.value), repr(client)):
        assert secret not in text
        assert token not in text


# -- bandwidth ------------------------------------------------------------------------------


def test_bandwidth_limit_holds(
    store_env: ObjectStore, tmp_path: Path, http_root: tuple[Path, str]
) -> None:
    location = make_location("oss", store_env, tmp_path, http_root)  # one backend is enough
    cap = 2 * MiB
    data = os.urandom(6 * MiB)
    location.put(KEY, data)
    options = PullOptions(concurrency=8, part_size=MiB // 2, bandwidth_limit=cap)
    started = time.monotonic()
    download_file(location.client, KEY, entry_for(data), tmp_path / "blob", options=options)
    elapsed = time.monotonic() - started
    assert len(data) / elapsed < 1.3 * cap


def test_one_limiter_caps_several_files_together(
    store_env: ObjectStore, tmp_path: Path, http_root: tuple[Path, str]
) -> None:
    location = make_location("s3", store_env, tmp_path, http_root)
    cap = 2 * MiB
    blobs = {f"v1/part-{i}.bin": os.urandom(3 * MiB) for i in range(2)}
    for key, data in blobs.items():
        location.put(key, data)
    limiter = RateLimiter(cap)
    options = PullOptions(concurrency=4, part_size=MiB // 2)
    errors: list[BaseException] = []

    def pull(key: str, data: bytes) -> None:
        try:
            dest = tmp_path / key.replace("/", "_")
            download_file(
                location.client, key, entry_for(data), dest, options=options, limiter=limiter
            )
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=pull, args=item) for item in blobs.items()]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    assert not errors
    assert sum(map(len, blobs.values())) / elapsed < 1.3 * cap


# -- kill -9 and resume ----------------------------------------------------------------------

CHILD = """
import json, sys
from pathlib import Path
from modelcache.api.manifest import ManifestFile
from modelcache.sources import PullOptions, download_file, open_source

job = json.loads(sys.argv[1])
options = PullOptions(concurrency=4, part_size=job["part_size"], bandwidth_limit=job["rate"])
entry = ManifestFile.model_validate(job["entry"])
download_file(open_source(job["url"]), job["key"], entry, Path(job["dest"]), options=options)
"""
KILLS = 12


def claimed(dest: Path, parts: list[Part]) -> dict[int, int]:
    """What the resume record claims is on disk: part index -> bytes from its start."""
    try:
        record = ResumeRecord.from_json(resume_path(dest).read_bytes())
    except (OSError, ValueError):
        return {}
    return {**record.started(), **{i: parts[i].length for i in record.done}}


@pytest.mark.parametrize(
    ("scheme", "layout"), [("oss", "parts"), ("s3", "parts"), ("s3", "pieces")]
)
def test_kill_9_at_many_points_then_resume_is_byte_identical(
    scheme: str, layout: str, store_env: ObjectStore, tmp_path: Path, http_root: tuple[Path, str]
) -> None:
    """Killed twelve times at different points: the record never claims a byte that is not
    on disk, each run keeps what it fetched (whole parts, and the first bytes of the parts in
    flight), and the resumed download fetches only what was never claimed. With pieces
    (schema 2) the parts are the pieces, and a resumed piece is hashed from its first byte."""
    location = make_location(scheme, store_env, tmp_path, http_root)
    data, part_size = os.urandom(12 * MiB), 512 * 1024
    location.put(KEY, data)
    entry = entry_for(data) if layout == "parts" else pieced_entry_for(data)
    parts = plan_parts(len(data), part_size if entry.pieces is None else entry.pieces.size)
    dest = tmp_path / "tmp" / "blob"
    dest.parent.mkdir()
    job = {
        "url": str(location.client.url),
        "key": KEY,
        "entry": entry.model_dump(),
        "dest": str(dest),
        "part_size": part_size,
        "rate": MiB // 2,  # slow: twelve kills, each a flush or so of progress, use a part of it
    }
    held: dict[int, int] = {}
    saw_partial = False
    for point in range(KILLS):
        child = subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(job)])
        try:
            while sum(claimed(dest, parts).values()) <= sum(held.values()):
                assert child.poll() is None, f"the download ended before kill {point + 1}"
                time.sleep(0.01)
            time.sleep(0.03 * (point % 5))  # land at different phases of the parts in flight
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
        now = claimed(dest, parts)
        assert sum(now.values()) > sum(held.values()), "each run made durable progress"
        held = now
        saw_partial = saw_partial or any(n < parts[i].length for i, n in held.items())
        partial = dest.read_bytes()
        for index, length in held.items():  # the record never claims bytes that are not there
            start = parts[index].start
            assert partial[start : start + length] == data[start : start + length]

    assert saw_partial, "parts in flight were resumed from their first bytes, not redone"
    seen = Counted()
    options = PullOptions(concurrency=4, part_size=part_size)
    download_file(location.client, KEY, entry, dest, options=options, progress=seen)
    assert dest.read_bytes() == data
    assert seen.total == len(data) - sum(held.values())
    assert not resume_path(dest).exists()


def test_a_link_that_keeps_breaking_completes_while_bytes_still_arrive(
    http_server: RangeServer, tmp_path: Path
) -> None:
    """7 broken responses in a row on one part: those that move bytes start the backoff
    over, and the pull completes (a fixed count of 6 retries gave up)."""
    data = os.urandom(32 * MiB)
    prefix = f"flakier-{time.monotonic_ns()}"
    client, served = breaking_source(http_server, prefix, data, breaks=7)
    dest = tmp_path / "blob"
    options = PullOptions(concurrency=1, part_size=32 * MiB)
    download_file(client, KEY, entry_for(data), dest, options=options)
    assert dest.read_bytes() == data
    assert http_server.faults[served] == 0


def test_a_cancelled_download_stops_where_it_is_and_resumes(
    store_env: ObjectStore, tmp_path: Path, http_root: tuple[Path, str]
) -> None:
    """`cancel` (an agent on SIGTERM) stops every part after its current chunk: the queued
    parts are not fetched, the partial and its record stay, and the next call resumes."""
    location = make_location("s3", store_env, tmp_path, http_root)
    data = os.urandom(8 * MiB)
    location.put(KEY, data)
    dest = tmp_path / "blob"
    options = PullOptions(concurrency=2, part_size=MiB // 4, bandwidth_limit=2 * MiB)
    cancel = threading.Event()
    received: list[int] = []

    def progress(nbytes: int) -> None:
        received.append(nbytes)
        if sum(received) >= MiB:
            cancel.set()

    with pytest.raises(PullCancelled):
        download_file(
            location.client,
            KEY,
            entry_for(data),
            dest,
            options=options,
            progress=progress,
            cancel=cancel,
        )
    first = sum(received)
    assert first < 2 * MiB, "the 24 queued parts were not fetched"
    assert resume_path(dest).exists()

    received.clear()
    download_file(location.client, KEY, entry_for(data), dest, options=options, progress=progress)
    assert dest.read_bytes() == data
    assert first + sum(received) <= len(data) + 2 * (MiB // 4), "only the rest was fetched"


# -- special files where a download keeps its files, and records that lie ---------------------


def release_fifo(path: Path) -> None:
    """Let go of a reader blocked on a FIFO at `path` (the old code): a writer comes and goes."""
    with contextlib.suppress(OSError):
        if path.is_fifo():
            os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))


def put_in_the_way(path: Path, kind: str) -> None:
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "empty directory":
        path.mkdir()
    else:  # a directory with something in it: moved aside, never deleted unseen
        path.mkdir()
        (path / "kept").write_bytes(b"not ours to delete")


@pytest.mark.timeout(120)  # the guard: a FIFO read as a record waited for a writer forever
@pytest.mark.parametrize("where", ["record", "partial"])
@pytest.mark.parametrize("kind", ["fifo", "empty directory", "directory"])
def test_a_special_file_where_a_download_keeps_its_files_does_not_stop_it(
    store_env: ObjectStore, tmp_path: Path, http_root: tuple[Path, str], where: str, kind: str
) -> None:
    """A FIFO or a directory at `<dest>.resume.json` or at `<dest>` itself: the download
    clears it without opening it (a directory with entries is renamed aside) and completes."""
    location = make_location("oss", store_env, tmp_path, http_root)
    data = os.urandom(3 * MiB + 5)
    location.put(KEY, data)
    dest = tmp_path / "tmp" / "blob.part"
    dest.parent.mkdir()
    in_the_way = resume_path(dest) if where == "record" else dest
    put_in_the_way(in_the_way, kind)
    told: list[str] = []
    try:
        download_file(
            location.client,
            KEY,
            entry_for(data),
            dest,
            options=PullOptions(part_size=MiB),
            on_resume_discarded=told.append,
        )
    finally:
        release_fifo(in_the_way)
    assert dest.read_bytes() == data
    assert not resume_path(dest).exists()
    aside = [p for p in dest.parent.iterdir() if ".aside-" in p.name]
    if kind == "directory":
        (moved,) = aside
        assert (moved / "kept").read_bytes() == b"not ours to delete"
    else:
        assert not aside
    if where == "record":  # a record that cannot be read is a record not trusted, and said so
        (reason,) = told
        assert str(in_the_way) in reason


@pytest.mark.timeout(120)
def test_a_fifo_as_the_partial_of_an_empty_file_with_its_record_is_replaced(
    store_env: ObjectStore, tmp_path: Path, http_root: tuple[Path, str]
) -> None:
    """A matching record beside a FIFO of the right size (zero): the FIFO is never taken
    for the downloaded file."""
    location = make_location("s3", store_env, tmp_path, http_root)
    location.put(KEY, b"")
    dest = tmp_path / "blob.part"
    os.mkfifo(dest)
    info = location.client.head(KEY)
    resume_path(dest).write_bytes(ResumeRecord(KEY, info.etag, 0, MiB).to_json())
    download_file(location.client, KEY, entry_for(b""), dest, options=PullOptions(part_size=MiB))
    assert dest.is_file()
    assert dest.read_bytes() == b""


def lying_record(location: Location, dest: Path, data: bytes, part_size: int) -> None:
    """A partial of the right size holding zeros, and a record claiming every part done but
    the last, and the first bytes of that one: what a disk that lost writes leaves."""
    info = location.client.head(KEY)
    parts = plan_parts(len(data), part_size)
    dest.write_bytes(bytes(len(data)))
    done = frozenset(p.index for p in parts[:-1])
    record = ResumeRecord(KEY, info.etag, len(data), part_size, done, ((parts[-1].index, 10),))
    resume_path(dest).write_bytes(record.to_json())


def test_a_resumed_file_that_fails_its_checksum_is_fetched_again_from_zero(
    store_env: ObjectStore, tmp_path: Path, http_root: tuple[Path, str]
) -> None:
    location = make_location("s3", store_env, tmp_path, http_root)
    data = os.urandom(4 * MiB + 1000)
    location.put(KEY, data)
    dest, seen, told = tmp_path / "blob", Counted(), list[str]()
    lying_record(location, dest, data, MiB)
    download_file(
        location.client,
        KEY,
        entry_for(data),
        dest,
        options=PullOptions(part_size=MiB),
        progress=seen,
        on_resume_discarded=told.append,
    )
    assert dest.read_bytes() == data
    assert seen.total == (1000 - 10) + len(data)  # the rest of the resumed tail, then all
    (reason,) = told
    assert "sha256 mismatch" in reason
    assert "from zero" in reason
    assert not resume_path(dest).exists()


def test_a_mismatch_after_the_fetch_from_zero_is_final(
    store_env: ObjectStore, tmp_path: Path, http_root: tuple[Path, str]
) -> None:
    """Healing is once: an object that really differs from its manifest still fails, after
    one fetch from zero, never a loop."""
    location = make_location("oss", store_env, tmp_path, http_root)
    original = os.urandom(2 * MiB)
    tampered = bytes([original[0] ^ 0xFF]) + original[1:]
    location.put(KEY, tampered)
    dest, seen, told = tmp_path / "blob", Counted(), list[str]()
    lying_record(location, dest, tampered, MiB)
    with pytest.raises(VerificationError) as error:
        download_file(
            location.client,
            KEY,
            entry_for(original),
            dest,
            options=PullOptions(part_size=MiB),
            progress=seen,
            on_resume_discarded=told.append,
        )
    assert error.value.what == "sha256"
    assert seen.total == (MiB - 10) + len(tampered)
    assert len(told) == 1
    assert not dest.exists()
    assert not resume_path(dest).exists()
