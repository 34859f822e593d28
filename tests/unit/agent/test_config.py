"""The standalone agent's config: defaults a person can rely on, errors that name the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelcache.agent.config import ConfigError, load_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "node.yaml"
    path.write_text(text)
    return path


def test_minimal_config_gets_sane_defaults(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            """
models:
  - name: studio/sdxl-lora
    source: oss://models/lora
    version: v2.3.1
""",
        )
    )
    assert config.root == Path("/var/lib/modelcache")
    assert config.event_log_path == Path("/var/lib/modelcache/events.jsonl")
    assert config.metrics_port == 9400
    (model,) = config.models
    assert model.retain == 5
    assert model.prefetch == []
    assert config.verify.enabled


@pytest.mark.parametrize(
    ("body", "names"),
    [
        ("models: [{name: a, source: ftp://x/y, version: v1}]", ["models.0.source", "ftp"]),
        ("models: [{name: a, source: s3://b/p, version: ../v1}]", ["models.0.version"]),
        ("models: [{name: a, source: s3://b/p, version: v1, retain: 0}]", ["models.0.retain"]),
        ("models: [{name: a, source: s3://b/p, version: v1, reload: [ftp://x]}]", ["reload URL"]),
        ("models: [{name: a, source: s3://b/p, version: v1, colour: red}]", ["colour"]),
        ("metrics_port: 70000", ["metrics_port"]),
    ],
)
def test_invalid_config_names_the_field(tmp_path: Path, body: str, names: list[str]) -> None:
    path = write(tmp_path, body)
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert str(path) in str(error.value)
    for name in names:
        assert name in str(error.value)


def test_duplicate_model_is_an_error(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
models:
  - {name: lora, source: s3://b/p, version: v1}
  - {name: default/lora, source: s3://b/q, version: v2}
""",
    )
    with pytest.raises(ConfigError, match="listed twice"):
        load_config(path)


def test_not_yaml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "models: [unclosed"))
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml")


@pytest.mark.parametrize(
    "text",
    [
        "models: [\n  {name: a/b\n",  # unclosed flow mapping
        "root: /x\n\tnode: a\n",  # a tab
        "models:\n  - name: a/b\n    source: oss://b/m\n    version: v1\n    retain: 0\n"
        "    prefetch: [../x]\n    extra: 1\n  - name: NOT VALID\n",
    ],
)
def test_a_bad_config_is_one_line_naming_the_file(tmp_path: Path, text: str) -> None:
    path = tmp_path / "node.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as refused:
        load_config(path)
    message = str(refused.value)
    assert "\n" not in message
    assert str(path) in message


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"", "is empty"),
        (b"# node config, the rest still being written\n", "is empty"),
        (b"\n  \n", "is empty"),
        (b"[" * 5000 + b"]" * 5000, "nested too deeply"),
        (b"models: [" * 3000, "nested too deeply"),
        (b"root: /x\xff\n", "not UTF-8"),
        (b"# " + b"x" * (1024**2), "larger than"),
    ],
)
def test_hostile_or_half_written_config_is_one_clean_error(
    tmp_path: Path, data: bytes, problem: str
) -> None:
    """An empty file is what a config rewritten in place reads like midway: it is refused,
    never taken as "no models"; nesting and size are bounded, each with one line."""
    path = tmp_path / "node.yaml"
    path.write_bytes(data)
    with pytest.raises(ConfigError, match=problem) as refused:
        load_config(path)
    assert "\n" not in str(refused.value)
