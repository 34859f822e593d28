"""Helpers to run `modelcache` as a person does and to build model directories."""

from __future__ import annotations

import random
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelcache.agent.events import read_events

BUCKET = "cli-models"


@dataclass
class Cli:
    """A `modelcache` runner bound to one cache root and one object store."""

    root: Path
    env: dict[str, str]

    def run(
        self, *args: str, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "modelcache", *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout,
            check=False,
        )
        if check and done.returncode != 0:
            command = " ".join(args)
            raise AssertionError(
                f"modelcache {command} exited {done.returncode}\n{done.stdout}\n{done.stderr}"
            )
        return done

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "modelcache", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env,
        )

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        records = read_events(self.root / "events.jsonl")
        return [r for r in records if kind is None or r["event"] == kind]

    def live(self, model: str = "default/lora") -> Path:
        return self.root / "models" / model / "current"


def make_model(directory: Path, seed: int, sizes: dict[str, int]) -> Path:
    """Deterministic pseudo-random files (like weights) under `directory`."""
    generator = random.Random(seed)  # noqa: S311 - test data, not secrets
    for relative, size in sizes.items():
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(generator.randbytes(size))
    return directory


def same_tree(left: Path, right: Path) -> bool:
    """Byte-identical trees (manifest.json, which the store adds, ignored)."""

    def files(root: Path) -> dict[str, bytes]:
        return {
            p.relative_to(root).as_posix(): p.read_bytes()
            for p in root.rglob("*")
            if p.is_file() and p.name != "manifest.json"
        }

    return files(left) == files(right)
