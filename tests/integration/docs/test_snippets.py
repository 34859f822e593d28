"""The docs run as written: every Python and shell block of README.md and docs/*.md is run
here (marked `local`), on the e2e cluster (`cluster`: tests/cluster/test_docs_snippets.py),
or marked `skip` with the reason. The markers are described in snippets.py.

A local snippet runs unchanged in a temp dir, with the environment a reader has at that
point: the store's endpoint in place of the example's, a cache root, the versions an
earlier step published, their own pipeline or model for the names a snippet takes from
the reader's program (tests/integration/docs/pyrun.py). What a reader fills in (an
endpoint, the node's mount point, a port that may be taken here) is replaced through
`fill_in`, which fails by name when the doc no longer has it.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelcache.testing import ObjectStore, Toolchain
from modelcache.testing.cache import cache_dir
from modelcache.testing.devenv import read_state
from modelcache.testing.images import PROJECT_IMAGES
from modelcache.testing.ports import free_port
from tests.integration.docs.snippets import (
    REPO,
    RUN_KINDS,
    Block,
    all_blocks,
    base_env,
    block,
    fill_in,
    marked,
    run_shell,
)

BUCKET = "studio-models"  # the README's quick start publishes to oss://studio-models/lora
SOURCE = f"oss://{BUCKET}/lora"
EXAMPLE_ENDPOINT = "https://oss-cn-hangzhou.aliyuncs.com"
NODE_ROOT = "/var/lib/modelcache"
PYTHON_SNIPPETS = (
    "readme-inference-pod",
    "runtime-torch-module",
    "runtime-peft",
    "runtime-diffusers",
)
SHELL_SNIPPETS = ("readme-publish", "readme-standalone", "readme-dev")


# --- every block is accounted for -----------------------------------------------------------


def cluster_snippets() -> set[str]:
    from tests.cluster.test_docs_snippets import RUNS  # noqa: PLC0415 - kubernetes client

    return set(RUNS)


def test_every_code_block_is_run_or_marked_with_a_reason() -> None:
    blocks = all_blocks()
    assert blocks, "no code blocks found: is the parser reading the docs?"
    problems = [
        f"{b.where}: a fence with no info string (```text, ```sh, ...)"
        for b in blocks
        if not b.info
    ]
    for code in (b for b in blocks if b.is_code):
        if code.marker is None or code.marker.kind not in RUN_KINDS:
            problems.append(f"{code.where}: a {code.info} block with no doc-test marker")
        elif code.marker.kind == "skip" and len(code.marker.value.split()) < 3:
            problems.append(f"{code.where}: skipped without a reason")
    for other in (b for b in blocks if not b.is_code and b.marker is not None):
        if other.marker is not None and other.marker.kind != "file":
            problems.append(f"{other.where}: a {other.info or 'plain'} block is not code to run")
    assert not problems, "\n".join(problems)

    assert set(marked("local")) == set(PYTHON_SNIPPETS + SHELL_SNIPPETS)
    assert set(marked("cluster")) == cluster_snippets()


def test_every_file_block_is_used_by_a_snippet() -> None:
    code = [b for b in all_blocks() if b.is_code]
    for name, file_block in marked("file").items():
        users = [b.where for b in code if b.doc == file_block.doc and name in b.text]
        assert users, f"{file_block.where}: no snippet of {file_block.doc} uses {name}"


def test_the_install_extras_exist() -> None:
    """The pip lines are not run (they install from PyPI); each extra they name exists."""
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    named = {
        extra
        for b in all_blocks()
        if b.is_code
        for extra in re.findall(r"pip install '?modelcache\[([\w,-]+)\]", b.text)
    }
    assert named >= {"agent", "operator", "runtime", "runtime-hf"}
    for group in named:
        for extra in group.split(","):
            assert extra in extras, f"the docs install modelcache[{extra}], which does not exist"


def test_the_docker_builds_are_the_images_the_e2e_cluster_runs() -> None:
    """`docker build -f F -t T .` in the docs: the Dockerfile and tag the e2e harness builds
    and loads into every node (tests/cluster runs these lines against those images)."""
    built = {(image.dockerfile, image.ref) for image in PROJECT_IMAGES}
    lines = [
        line
        for b in all_blocks()
        if b.is_code
        for line in b.text.splitlines()
        if "docker build" in line
    ]
    assert len(lines) >= 4
    for line in lines:
        words = shlex.split(line, comments=True)
        dockerfile, tag = words[words.index("-f") + 1], words[words.index("-t") + 1]
        assert (dockerfile, tag) in built, f"{line!r}: the harness builds {sorted(built)}"


# --- the README's quick start on one machine, against a real S3/OSS store -------------------


@pytest.fixture(scope="module")
def store(object_store: ObjectStore) -> ObjectStore:
    object_store.create_bucket(BUCKET)
    return object_store


def reader_env(store: ObjectStore, home: Path, **extra: str) -> dict[str, str]:
    """What the reader exported in the publish step (keys as the README writes them:
    SeaweedFS takes any key pair), with the test's store as the endpoint."""
    return base_env(
        home,
        OSS_ENDPOINT=store.endpoint,
        OSS_ACCESS_KEY_ID="...",
        OSS_ACCESS_KEY_SECRET="...",
        **extra,
    )


def published(store: ObjectStore, version: str) -> bool:
    client = store.s3_client()
    listed = client.list_objects_v2(Bucket=BUCKET, Prefix=f"lora/{version}/manifest.json")
    return bool(listed.get("KeyCount"))


def publish(store: ObjectStore, version: str, work: Path) -> None:
    """A version published before the snippet runs (unless the README's publish did it)."""
    if published(store, version):
        return
    model = work / f"model-{version}"
    model.mkdir(parents=True)
    (model / "adapter_model.safetensors").write_bytes(version.encode() * 1000)
    (model / "adapter_config.json").write_text('{"r": 8}')
    script = f"modelcache publish {model} {SOURCE} --version {version}"
    run_shell(script, cwd=work, env=reader_env(store, work)).check()


def garment_lora(cwd: Path) -> Path:
    """The reader's model directory, as `./garment-lora` in the README."""
    directory = cwd / "garment-lora"
    (directory / "unet").mkdir(parents=True)
    (directory / "pytorch_lora_weights.safetensors").write_bytes(b"\x00" * 4096)
    (directory / "unet" / "config.json").write_text('{"rank": 16}\n')
    return directory


def test_readme_publish(store: ObjectStore, tmp_path: Path) -> None:
    snippet = block("local", "readme-publish")
    garment_lora(tmp_path)
    script = fill_in(snippet.text, {EXAMPLE_ENDPOINT: store.endpoint}, snippet.where)
    ran = run_shell(script, cwd=tmp_path, env=base_env(tmp_path)).check()
    assert "v2.3.1" in ran.stdout + ran.stderr
    assert published(store, "v2.3.1")


def test_readme_standalone(store: ObjectStore, tmp_path: Path) -> None:
    snippet = block("local", "readme-standalone")
    root = tmp_path / "cache"
    env = reader_env(store, tmp_path, MODELCACHE_ROOT=str(root))
    for version in ("v2.3.0", "v2.3.1"):
        publish(store, version, tmp_path)
    before = f"modelcache use studio/garment-lora v2.3.0 --source {SOURCE}"
    run_shell(before, cwd=tmp_path, env=env).check()  # "with v2.3.0 in use before"

    ran = run_shell(snippet.text, cwd=tmp_path, env=env).check()
    model = root / "models" / "studio" / "garment-lora"
    assert (model / "current").resolve().name == "v2.3.0"  # rolled back
    assert (model / "versions" / "v2.3.1" / "manifest.json").is_file()
    assert "studio/garment-lora" in ran.stdout


# --- `modelcache dev` as a person runs it ---------------------------------------------------


@pytest.fixture
def dev_cache(toolchain: Toolchain, tmp_path: Path) -> Iterator[Path]:
    """A cache dir of its own (so `dev` state is not a person's), with the binaries the
    session already built linked in: nothing is rebuilt."""
    del toolchain  # built: every pinned binary is in cache_dir()/bin
    cache = tmp_path / "modelcache-cache"
    cache.mkdir()
    (cache / "bin").symlink_to(cache_dir() / "bin", target_is_directory=True)
    yield cache
    if read_state(cache / "dev") is not None:  # the snippet failed before `dev down`
        subprocess.run(
            [sys.executable, "-m", "modelcache", "dev", "down"],
            env=base_env(tmp_path, MODELCACHE_CACHE_DIR=str(cache)),
            capture_output=True,
            timeout=120,
            check=False,
        )


def test_readme_dev(dev_cache: Path, tmp_path: Path) -> None:
    snippet = block("local", "readme-dev")
    env = base_env(tmp_path, MODELCACHE_CACHE_DIR=str(dev_cache))
    ran = run_shell(snippet.text, cwd=tmp_path, env=env, timeout=400).check()
    assert "s3_endpoint" in ran.stdout or "S3" in ran.stdout, ran.stdout[-2000:]
    assert read_state(dev_cache / "dev") is None, "`dev down` left the services running"


# --- the Python snippets: the inference pod, the torch module, PEFT, diffusers -------------


def cuda_fill_ins() -> dict[str, str]:
    """Where no GPU is, the snippets' "cuda" becomes "cpu"; everything else stays."""
    import torch  # noqa: PLC0415

    return {} if torch.cuda.is_available() else {'"cuda"': '"cpu"'}


FILL_INS: dict[str, list[str]] = {  # what each Python snippet has the reader fill in
    "readme-inference-pod": ["root", "port"],
    "runtime-torch-module": ["root", "port", "cuda"],
    "runtime-peft": ["cuda"],
    "runtime-diffusers": ["root", "cuda"],
}


def python_fill_ins(name: str, root: Path, port: int) -> dict[str, str]:
    kinds = FILL_INS[name]
    found: dict[str, str] = {}
    if "root" in kinds:
        found[NODE_ROOT] = str(root)  # the node's cache, mounted where the pod says
    if "port" in kinds:
        found["port=8000"] = f"port={port}"  # 8000 may be taken on this machine
    if "cuda" in kinds:
        found.update(cuda_fill_ins())
    return found


@pytest.mark.parametrize("name", PYTHON_SNIPPETS)
def test_python_snippet(name: str, tmp_path: Path) -> None:
    snippet: Block = block("local", name)
    port = free_port()
    code = fill_in(snippet.text, python_fill_ins(name, tmp_path / "root", port), snippet.where)
    path = tmp_path / f"{name}.py"
    path.write_text(code)
    env = base_env(tmp_path, PYTHONPATH=str(REPO))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.integration.docs.pyrun",
            name,
            str(path),
            str(tmp_path),
            str(port),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    shown = f"--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-6000:]}"
    assert result.returncode == 0, f"{snippet.where} ({name}) exited {result.returncode}\n{shown}"
    assert "SNIPPET OK" in result.stdout, shown
