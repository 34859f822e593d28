"""Acceptance: prune in L3, verify and repair in L2, gc with retention, as a person runs them."""

from __future__ import annotations

import json
from pathlib import Path

from modelcache.testing import ObjectStore
from tests.integration.cli.support import BUCKET, Cli, make_model, same_tree

FILES = {"lora/20.safetensors": 200_000, "vae/config.json": 600}


def test_prune_keeps_the_newest_and_the_protected(
    cli: Cli, prefix: str, tmp_path: Path, object_store: ObjectStore
) -> None:
    url = f"s3://{BUCKET}/{prefix}"
    for seed, version in enumerate(["v1", "v2", "v3", "v4"]):
        cli.run(
            "publish", str(make_model(tmp_path / version, seed, FILES)), url, "--version", version
        )
    done = cli.run("prune", url, "--keep", "2", "--protect", "v1")
    assert "v2" in done.stdout
    listed = json.loads(cli.run("versions", url, "--json").stdout)
    assert [v["version"] for v in listed["versions"]] == ["v1", "v3", "v4"]
    keys = (
        object_store.s3_client()
        .list_objects_v2(Bucket=BUCKET, Prefix=f"{prefix}/v2/")
        .get("Contents", [])
    )
    assert keys == [], "every object of the pruned version is gone"
    missing = cli.run("pull", url, "--name", "lora", "--version", "v2", check=False)
    assert missing.returncode != 0
    assert "v2" in missing.stderr


def test_verify_repairs_a_corrupt_file_from_l3(cli: Cli, prefix: str, tmp_path: Path) -> None:
    url = f"oss://{BUCKET}/{prefix}"
    v1 = make_model(tmp_path / "v1", 1, FILES)
    cli.run("publish", str(v1), url, "--version", "v1")
    cli.run("use", "lora", "v1", "--source", url)
    damaged = cli.live() / "lora/20.safetensors"
    with damaged.open("r+b") as handle:
        handle.write(b"\xff" * 64)
    report = cli.run("verify", "lora")
    assert "1 corrupt, 1 repaired" in report.stdout
    assert same_tree(v1, cli.live())
    assert [
        e["event"] for e in cli.events() if e["event"] in ("L2_VERIFY_FAILED", "L2_REPAIR")
    ] == [
        "L2_VERIFY_FAILED",
        "L2_REPAIR",
    ]
    clean = cli.run("verify")
    assert "0 corrupt" in clean.stdout


def test_gc_keep_never_removes_live_or_rollback_target(
    cli: Cli, prefix: str, tmp_path: Path
) -> None:
    url = f"oss://{BUCKET}/{prefix}"
    for seed, version in enumerate(["v1", "v2", "v3", "v4"]):
        cli.run(
            "publish", str(make_model(tmp_path / version, seed, FILES)), url, "--version", version
        )
        cli.run("use", "lora", version, "--source", url)
    cli.run("rollback", "lora")  # live v3, rollback target v4
    cli.run("gc", "--keep", "1")
    listing = json.loads(cli.run("ls", "--json").stdout)["versions"]
    assert sorted(r["version"] for r in listing) == ["v3", "v4"]
    assert cli.live().resolve().name == "v3"
    evicted = sorted(e["version"] for e in cli.events("L2_EVICT"))
    assert evicted == ["v1", "v2"]


def test_versions_rebuild_writes_a_lost_index_again_from_the_manifests(
    cli: Cli, prefix: str, tmp_path: Path, object_store: ObjectStore
) -> None:
    url = f"s3://{BUCKET}/{prefix}"
    for seed, version in enumerate(["v1", "v2"]):
        cli.run(
            "publish", str(make_model(tmp_path / version, seed, FILES)), url, "--version", version
        )
    s3 = object_store.s3_client()
    s3.put_object(Bucket=BUCKET, Key=f"{prefix}/index.json", Body=b"{not json")
    broken = cli.run("versions", url, check=False)
    assert broken.returncode != 0
    assert "invalid index" in broken.stderr
    assert len(broken.stderr.strip().splitlines()) == 1

    cli.run("versions", url, "--rebuild")
    listed = json.loads(cli.run("versions", url, "--json").stdout)
    assert [(v["version"], v["state"]) for v in listed["versions"]] == [
        ("v1", "published"),
        ("v2", "published"),
    ]
    assert [v["size"] for v in listed["versions"]] == [sum(FILES.values())] * 2

    s3.delete_object(Bucket=BUCKET, Key=f"{prefix}/index.json")
    assert json.loads(cli.run("versions", url, "--json").stdout)["versions"] == []
    cli.run("versions", url, "--rebuild", "--version", "v2")  # a store that cannot list
    listed = json.loads(cli.run("versions", url, "--json").stdout)
    assert [v["version"] for v in listed["versions"]] == ["v2"]
    missing = cli.run("versions", url, "--rebuild", "--version", "v9", check=False)
    assert missing.returncode != 0
    assert "v9" in missing.stderr
