"""The agent and the files on its own disk: a config that is a FIFO or not a config at all,
and a partial download whose resume record lies. Each ends in one clear line or heals;
none hangs, none echoes a file's contents, none waits 15 minutes for nothing."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import sys
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelcache.agent.events import read_events
from modelcache.sources import open_source, publish
from modelcache.sources.resume import ResumeRecord, plan_parts
from modelcache.testing import ObjectStore
from tests.integration.cli.support import make_model
from tests.waiting import wait_for

SECRET = "Sw0rdF1sh-7f3a9c"
BUCKET = "agent-files"
PART = 64 * 1024  # the smallest part size a config allows: a small file has several parts


def agent_command(config: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "modelcache", "agent", "--config", str(config), *extra]


def test_once_with_a_fifo_as_its_config_fails_at_once(tmp_path: Path) -> None:
    """Before: `--once` opened the FIFO and waited for a writer forever."""
    config = tmp_path / "node.yaml"
    os.mkfifo(config)
    try:
        done = subprocess.run(  # the timeout is the hang guard, not a speed requirement
            agent_command(config, "--once"), capture_output=True, text=True, timeout=60, check=False
        )
    finally:
        with_writer_released(config)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"agent config {config} is a FIFO, not a regular file" in done.stderr


def with_writer_released(fifo: Path) -> None:
    """Let go of a reader blocked on `fifo` (the old code): a writer that opens and closes."""
    with contextlib.suppress(OSError):  # no reader: nothing waits
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


NOT_A_CONFIG = {
    "shadow": f"root:$6${SECRET}:19000:0:99999:7:::\nbin:*:19000:0:99999:7:::\n".encode(),
    "tag": f"models: [!{SECRET} x]\n".encode(),
    "key": f"{SECRET}: 1\n".encode(),
    "binary": b"\x7fELF\x02\x01\x01\x00" + SECRET.encode() + bytes(range(256)),
    "long-line": SECRET.encode() * 60_000 + b": x",
}


@pytest.mark.parametrize("name", NOT_A_CONFIG)
def test_once_with_a_file_that_is_not_a_config_names_it_and_never_echoes_it(
    tmp_path: Path, name: str
) -> None:
    config = tmp_path / "shadow"
    config.write_bytes(NOT_A_CONFIG[name])
    done = subprocess.run(
        agent_command(config, "--once"), capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 1
    assert str(config) in done.stderr
    assert SECRET not in done.stdout + done.stderr


def test_a_running_agent_given_a_file_that_is_not_a_config_logs_no_contents(
    tmp_path: Path,
) -> None:
    """The error event (events.jsonl, stdout) names the file and the problem only."""
    root = tmp_path / "cache"
    config = tmp_path / "node.yaml"
    settings: dict[str, Any] = {
        "root": str(root),
        "metrics_port": None,
        "poll_seconds": 0.05,
        "models": [],
    }
    config.write_text(yaml.safe_dump({**settings, "verify": {"enabled": False}}))
    out = tmp_path / "agent.out"
    with out.open("w") as sink:
        agent = subprocess.Popen(agent_command(config), stdout=sink, stderr=subprocess.STDOUT)
    try:
        wait_for((root / "events.jsonl").exists, "the agent started")
        for refused, (name, data) in enumerate(NOT_A_CONFIG.items(), start=1):
            staged = tmp_path / f"{name}.staged"
            staged.write_bytes(data)
            staged.rename(config)
            wait_for(partial(errors_reach, root, refused), f"the {name} file refused")
    finally:
        agent.send_signal(signal.SIGTERM)
        code = agent.wait(timeout=60)
    assert code == 0, out.read_text()[-3000:]
    errors = config_errors(root)
    assert len(errors) == len(NOT_A_CONFIG)
    assert all(str(config) in error for error in errors)
    assert SECRET not in (root / "events.jsonl").read_text()
    assert SECRET not in out.read_text()


def errors_reach(root: Path, count: int) -> bool:
    return len(config_errors(root)) >= count


def config_errors(root: Path) -> list[str]:
    events = read_events(root / "events.jsonl")
    return [e["error"] for e in events if e["event"] == "ERROR" and e["operation"] == "config"]


# -- a resume record that lies ------------------------------------------------------------------


def test_a_resume_record_claiming_bytes_the_disk_lost_heals_in_the_first_pull(
    object_store: ObjectStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A record claims every part done while the partial holds zeros (a disk that lost
    writes, a restored snapshot): the checksum fails, the partial and its record go, the file
    comes again from zero, and `--once` succeeds, the discard in the event log. Before, the
    pull failed its checksum and the agent called it permanent (15 minutes)."""
    object_store.create_bucket(BUCKET)
    monkeypatch.setenv("OSS_ENDPOINT", object_store.endpoint)
    url = f"oss://{BUCKET}/lying-{os.getpid()}"
    model = make_model(tmp_path / "model", seed=5, sizes={"lora/w.safetensors": 5 * PART + 7})
    weights = (model / "lora/w.safetensors").read_bytes()
    publish(open_source(url), model, "v1")
    info = open_source(url).head("v1/lora/w.safetensors")

    root = tmp_path / "cache"
    sha256 = hashlib.sha256(weights).hexdigest()
    part_file = root / "tmp" / f"{sha256}.part"
    part_file.parent.mkdir(parents=True)
    part_file.write_bytes(bytes(len(weights)))  # the right size, none of the right bytes
    parts = plan_parts(len(weights), PART)
    lie = ResumeRecord(
        "v1/lora/w.safetensors", info.etag, len(weights), PART, frozenset(p.index for p in parts)
    )
    part_file.with_name(part_file.name + ".resume.json").write_bytes(lie.to_json())

    config: dict[str, Any] = {
        "root": str(root),
        "metrics_port": None,
        "verify": {"enabled": False},
        "pull": {"part_size_bytes": PART},
        "models": [{"name": "studio/lora", "source": url, "version": "v1"}],
    }
    path = tmp_path / "node.yaml"
    path.write_text(yaml.safe_dump(config))
    done = subprocess.run(
        agent_command(path, "--once"), capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    live = root / "models/studio/lora/current/lora/w.safetensors"
    assert live.read_bytes() == weights

    events = read_events(root / "events.jsonl")
    (discarded,) = [e for e in events if e["event"] == "L3_RESUME_DISCARDED"]
    assert (discarded["file"], discarded["sha256"]) == ("lora/w.safetensors", sha256)
    assert "sha256 mismatch" in discarded["reason"]
    assert not [e for e in events if e["event"] in ("ERROR", "L2_VERIFY_FAILED")]
