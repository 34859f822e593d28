"""The downloader's pure parts: part planning, the resume record, the token bucket, checks."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelcache.api.manifest import ManifestFile
from modelcache.fs import Digest, StreamHasher
from modelcache.sources import (
    ObjectInfo,
    PullOptions,
    RateLimiter,
    VerificationError,
    open_source,
    resume,
)
from modelcache.sources.download import MiB, check_head, verify
from modelcache.sources.local import LocalClient
from modelcache.sources.resume import (
    MAX_RECORD_BYTES,
    ResumeRecord,
    load_record,
    part_count,
    plan_parts,
    resume_path,
)
from tests.strategies import json_values


def entry_for(path: str, data: bytes) -> ManifestFile:
    hasher = StreamHasher()
    hasher.update(data)
    digest = hasher.digest()
    return ManifestFile(path=path, size=digest.size, sha256=digest.sha256, crc64=str(digest.crc64))


# -- part planning -------------------------------------------------------------------------


@given(part_size=st.integers(1, 1 << 30), parts=st.integers(0, 2000), tail=st.integers(0, 1 << 30))
def test_parts_cover_the_object_exactly_once(part_size: int, parts: int, tail: int) -> None:
    size = part_size * parts + tail % part_size
    planned = plan_parts(size, part_size)
    assert len(planned) == part_count(size, part_size)
    position = 0
    for index, part in enumerate(planned):
        assert (part.index, part.start) == (index, position)
        assert 0 < part.length <= part_size
        position = part.end
    assert position == size
    assert all(p.length == part_size for p in planned[:-1])


def test_zero_bytes_have_no_parts() -> None:
    assert plan_parts(0, 8) == []


@pytest.mark.parametrize(("size", "part_size"), [(-1, 8), (10, 0)])
def test_nonsense_plans_are_refused(size: int, part_size: int) -> None:
    with pytest.raises(ValueError, match="cannot plan"):
        plan_parts(size, part_size)


# -- the resume record ----------------------------------------------------------------------


@st.composite
def records(draw: st.DrawFn) -> ResumeRecord:
    part_size = draw(st.integers(1, 1 << 24))
    size = draw(st.integers(0, part_size * 300))
    done = draw(st.frozensets(st.integers(0, max(0, part_count(size, part_size) - 1))))
    if size == 0:
        done = frozenset()
    return ResumeRecord(draw(st.text(min_size=1)), draw(st.text()), size, part_size, done)


@given(records())
def test_record_round_trips(record: ResumeRecord) -> None:
    assert ResumeRecord.from_json(record.to_json()) == record


VALID = {"version": 1, "key": "v1/a", "etag": "e", "size": 10, "part_size": 4, "done": [0, 2]}


@pytest.mark.parametrize(
    "change",
    [
        {"done": [3]},  # 10 bytes in 4-byte parts: parts 0..2
        {"done": [-1]},
        {"done": [0, 0]},
        {"done": [True]},
        {"done": "0,1"},
        {"size": -1},
        {"size": "10"},
        {"part_size": 0},
        {"key": None},
        {"etag": 5},
        {"version": 2},
    ],
)
def test_corrupt_records_are_rejected(change: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="resume record"):
        ResumeRecord.from_json(json.dumps({**VALID, **change}))


@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_parse_into_an_inconsistent_record(data: bytes) -> None:
    try:
        record = ResumeRecord.from_json(data)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return
    assert all(0 <= i < part_count(record.size, record.part_size) for i in record.done)


def test_unreadable_record_is_ignored(tmp_path: Path) -> None:
    dest = tmp_path / "blob"
    resume_path(dest).write_text('{"version": 1, "key": ')
    assert load_record(dest.with_name("blob.resume.json")) is None
    assert load_record(tmp_path / "none.resume.json") is None


def test_record_matches_only_the_same_version_and_layout() -> None:
    record = ResumeRecord.from_json(json.dumps(VALID))
    assert record.matches("v1/a", "e", 10, 4)
    assert not record.matches("v1/a", "other", 10, 4)
    assert not record.matches("v1/a", "e", 10, 8)
    assert not record.matches("v1/b", "e", 10, 4)


# -- the token bucket ------------------------------------------------------------------------


class FakeClock:
    """Time that moves only when someone sleeps: the limiter's arithmetic, without waiting."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@given(
    rate=st.floats(1e3, 1e9),
    takes=st.lists(st.tuples(st.integers(1, 1 << 22), st.floats(0, 2)), max_size=60),
)
def test_grants_never_exceed_burst_plus_rate_times_elapsed(
    rate: float, takes: list[tuple[int, float]]
) -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate, clock=clock, sleep=clock.sleep)
    granted = 0
    for amount, idle in takes:
        clock.sleep(idle)
        limiter.acquire(amount)
        granted += amount
        assert granted <= limiter.burst + rate * clock.now + 1e-6 * granted + 1


def test_a_steady_taker_gets_the_rate() -> None:
    clock = FakeClock()
    limiter = RateLimiter(1000.0, burst=0, clock=clock, sleep=clock.sleep)
    for _ in range(100):
        limiter.acquire(50)
    assert clock.now == pytest.approx(5.0)


def test_waiters_queue_in_arrival_order() -> None:
    clock = FakeClock()
    limiter = RateLimiter(100.0, burst=0, clock=clock)
    assert [limiter.reserve(100) for _ in range(3)] == pytest.approx([1.0, 2.0, 3.0])


def test_rate_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        RateLimiter(0)


@pytest.mark.parametrize(
    "bad",
    [{"concurrency": 0}, {"part_size": 0}, {"retries": -1}, {"bandwidth_limit": 0.0}],
)
def test_nonsense_options_are_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must"):
        PullOptions(**bad)  # type: ignore[arg-type]


# -- checks against the manifest ------------------------------------------------------------


def test_head_disagreeing_on_size_or_crc_is_refused_before_downloading(tmp_path: Path) -> None:
    client = open_source(str(tmp_path))
    entry = entry_for("unet/48.safetensors", b"abc")
    check_head(client, "v1/x", ObjectInfo("v1/x", 3, "e", int(entry.crc64)), entry)
    with pytest.raises(VerificationError) as size:
        check_head(client, "v1/x", ObjectInfo("v1/x", 4, "e"), entry)
    assert (size.value.what, size.value.expected, size.value.actual) == ("size", "3", "4")
    with pytest.raises(VerificationError) as crc:
        check_head(client, "v1/x", ObjectInfo("v1/x", 3, "e", 12345), entry)
    assert crc.value.what == "crc64"
    assert "unet/48.safetensors" in str(crc.value)
    assert entry.crc64 in str(crc.value)
    assert "12345" in str(crc.value)


def test_verify_names_the_file_and_both_digests() -> None:
    entry = entry_for("lora/20.safetensors", b"good bytes")
    other = entry_for("x", b"evil bytes")
    with pytest.raises(VerificationError) as error:
        verify(Digest(other.size, other.sha256, int(other.crc64)), entry, "oss://b/p/v1/x")
    assert error.value.what == "sha256"
    message = str(error.value)
    assert "lora/20.safetensors" in message
    assert entry.sha256 in message
    assert other.sha256 in message
    assert "oss://b/p/v1/x" in message


def test_local_source_is_what_a_plain_path_opens(tmp_path: Path) -> None:
    assert isinstance(open_source(str(tmp_path)), LocalClient)


def test_a_record_keeps_the_first_bytes_of_parts_in_flight() -> None:
    record = ResumeRecord("k", "e", 10 * MiB, 4 * MiB, frozenset({0}), ((1, 1000), (2, 5)))
    assert ResumeRecord.from_json(record.to_json()) == record
    assert record.started() == {1: 1000, 2: 5}


@pytest.mark.parametrize(
    "partial",
    [
        {"0": 10},  # a part the record also claims whole
        {"1": 0},
        {"1": 4 * MiB},  # as long as the part: that is `done`, not partial
        {"2": 2 * MiB + 1},  # past the end of the last, shorter part
        {"9": 1},
        {"x": 1},
        {"1": True},
        [],
    ],
)
def test_a_record_claiming_impossible_partial_bytes_is_not_trusted(partial: object) -> None:
    raw = json.loads(ResumeRecord("k", "e", 10 * MiB, 4 * MiB, frozenset({0})).to_json())
    raw["partial"] = partial
    with pytest.raises(ValueError, match=r"partial|claims"):
        ResumeRecord.from_json(json.dumps(raw))


# -- the record's bound: any bytes, any structure, any file give a record or one refusal ----------

record_values = json_values(
    st.sampled_from(["version", "key", "etag", "size", "part_size", "done", "partial"])
    | st.sampled_from(["0", "1", "2", "²", "٣", "01", "-1"])
    | st.text(max_size=4),
    max_leaves=24,
)


def parses_or_refuses(data: bytes | str) -> ResumeRecord | None:
    """The parser's whole contract: a consistent record, or ValueError and nothing else."""
    refusal = ""
    try:
        record = ResumeRecord.from_json(data)
    except ValueError as error:
        refusal = str(error) or type(error).__name__
    if refusal:
        assert "\n" not in refusal
        assert len(refusal) < 200, "a refusal quotes the record only briefly"
        return None
    parts = part_count(record.size, record.part_size)
    assert all(0 <= i < parts for i in record.done)
    assert all(0 <= i < parts and i not in record.done for i, _ in record.partial)
    return record


@settings(max_examples=400, deadline=None)
@given(
    st.fixed_dictionaries(
        {"version": st.sampled_from([1, 1.0, True, "1", 2])},
        optional={
            "key": record_values,
            "etag": record_values,
            "size": st.integers(-2, 2**70) | record_values,
            "part_size": st.integers(-2, 2**70) | record_values,
            "done": st.lists(st.integers(-2, 300) | record_values, max_size=8) | record_values,
            "partial": st.dictionaries(record_values.map(str), record_values, max_size=4)
            | record_values,
        },
    )
    | record_values
)
def test_any_structure_is_a_record_or_one_refusal(value: object) -> None:
    parses_or_refuses(json.dumps(value))


@pytest.mark.parametrize(
    "data",
    [
        b"[" * 200_000,
        b'{"version": 1, "done": ' + b"[" * 200_000,
        b'{"version": ' + b"9" * 10_000 + b"}",
        b'{"version": "' + b"x" * 100_000 + b'"}',
        b'{"version": 1, "key": "k", "etag": "e", "size": 10, "part_size": 4, "done": [],'
        b' "partial": {"' + b"\xc2\xb2" + b'": 1}}',
        b"\xff\xfe\x00",
    ],
    ids=["nested", "nested-done", "long-int", "long-string", "superscript-index", "not-utf8"],
)
def test_hostile_records_are_one_refusal(data: bytes) -> None:
    assert parses_or_refuses(data) is None


@pytest.mark.timeout(30)  # the guard: reading a FIFO as a record waited for a writer forever
@pytest.mark.parametrize("kind", ["fifo", "directory", "too large"])
def test_a_record_that_is_not_a_small_regular_file_is_not_trusted(
    tmp_path: Path, kind: str
) -> None:
    path = tmp_path / "blob.part.resume.json"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    else:
        with path.open("wb") as sparse:  # a valid start, then past the cap: never parsed
            sparse.write(ResumeRecord("k", "e", 10, 4).to_json()[:-1] + b", ")
            sparse.truncate(MAX_RECORD_BYTES + 1)
    assert load_record(path) is None


def test_a_record_that_would_outgrow_its_cap_keeps_the_last_one_that_fit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the cap the journal stops rewriting: what stays claims less than the disk holds,
    never more, and is still a record the next run reads."""
    size, part_size = 400 * 4, 4
    first = ResumeRecord("k", "e", size, part_size)
    monkeypatch.setattr(resume, "MAX_RECORD_BYTES", len(first.to_json()) + 40)
    path = tmp_path / "blob.part.resume.json"
    with (tmp_path / "blob.part").open("wb") as data:
        journal = resume.Journal(data.fileno(), path, first, interval=0)
        for part in plan_parts(size, part_size):
            journal.finished(part)
    kept = load_record(path)
    assert kept is not None
    assert 0 < len(kept.done) < 400
    assert len(path.read_bytes()) <= resume.MAX_RECORD_BYTES
