"""The standalone agent's config: defaults a person can rely on, errors that name the field."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelcache.agent.config import ConfigError, load_config, parse_config


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


# -- special files and files that are not ours ------------------------------------------------

SECRET = "Sw0rdF1sh-7f3a9c"  # what a system file given by mistake may hold: never echoed


@pytest.mark.timeout(30)  # the guard: a FIFO opened for reading waits for a writer forever
@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_a_special_file_as_the_config_is_refused_at_once(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "node.yaml"
    os.mkfifo(path) if kind == "fifo" else path.mkdir()
    with pytest.raises(ConfigError) as refused:
        load_config(path)
    message = str(refused.value)
    assert str(path) in message
    assert ("a FIFO" if kind == "fifo" else "a directory") in message


NOT_YAML = [
    pytest.param(
        f"root:$6${SECRET}:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n".encode(),
        id="shadow",
    ),
    pytest.param(f"models: [!{SECRET} x]\n".encode(), id="tag"),
    pytest.param(f"a: *{SECRET}\n".encode(), id="alias"),
    pytest.param(f"{SECRET}: 1\n".encode(), id="key"),
    pytest.param(f"pull: {{{SECRET}: 1}}\n".encode(), id="nested-key"),
    pytest.param(f'a: "\\q{SECRET}"\n'.encode(), id="escape"),
    pytest.param(f"a:\n\tb: {SECRET}\n".encode(), id="tab"),
    pytest.param(f"[{SECRET}\n".encode(), id="unclosed"),
    pytest.param(f"a: 1\x00{SECRET}".encode(), id="nul"),
    pytest.param(f"%{SECRET} x\n---\na: 1\n".encode(), id="directive"),
    pytest.param(b"\x7fELF\x02\x01\x01\x00" + SECRET.encode() + bytes(range(256)), id="binary"),
    pytest.param(SECRET.encode() * 60_000 + b": x", id="long-line"),
    pytest.param(SECRET.encode() * 70_000, id="past-the-cap"),
    pytest.param(f"a: &x 1\nb: &x 2\nc: *{SECRET}\n".encode(), id="anchors"),
]


@pytest.mark.parametrize("data", NOT_YAML)
def test_a_file_that_is_not_a_config_is_named_never_echoed(tmp_path: Path, data: bytes) -> None:
    """A system file given as the config by mistake: the error names the file and the
    problem in one line, and not one of the file's words."""
    path = tmp_path / "node.yaml"
    path.write_bytes(data)
    with pytest.raises(ConfigError) as refused:
        load_config(path)
    message = str(refused.value)
    assert str(path) in message
    assert SECRET not in message
    assert SECRET.lower() not in message.lower()
    assert "\n" not in message


def test_a_tab_is_still_named() -> None:
    """Redacting the file's words keeps the one hint a person needs most."""
    path = Path("node.yaml")
    with pytest.raises(ConfigError, match=r"line 2, column 1: found character '\\t'"):
        parse_config(b"root: /x\n\tnode: a\n", path)


FRAGMENTS = st.sampled_from(
    [
        SECRET,
        f"!{SECRET} ",
        f"*{SECRET}",
        f"&{SECRET} ",
        f"{SECRET}: ",
        f'"{SECRET}',
        f"'{SECRET}'",
        f"%{SECRET}",
        f"\\{SECRET}",
        f"{{{SECRET}: ",
        f"- {SECRET}",
        "\n",
        "\t",
        ": ",
        "[",
        "]",
        "{",
        "}",
        ",",
        "  ",
        "verify: ",
        "pull: ",
        "models: ",
        "---\n",
        "\x00",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(FRAGMENTS | st.text(max_size=4), max_size=14))
def test_no_arrangement_of_a_secret_reaches_the_error(pieces: list[str]) -> None:
    """Wherever a secret sits in a file that is not a config (a key, a tag, an alias, a
    scalar, a quoted string), the config error does not carry it."""
    message = ""
    try:
        parse_config("".join(pieces).encode(), Path("node.yaml"))
    except ConfigError as error:
        message = str(error)
    assert SECRET not in message


@pytest.mark.parametrize(
    "url",
    [
        "http://user:PASSW0RD@127.0.0.1:8000/modelcache/reload",
        "http://127.0.0.1:8000/modelcache/reload?token=PASSW0RD",
        "http://127.0.0.1:8000/modelcache/reload#PASSW0RD",
    ],
)
def test_a_reload_url_carrying_a_secret_is_refused_without_echoing_it(
    tmp_path: Path, url: str
) -> None:
    """A reload call carries no credentials: a URL with one would print it in logs,
    events and status."""
    path = write(
        tmp_path,
        f"models:\n  - name: studio/lora\n    source: file:///l3\n    version: v1\n"
        f"    reload: ['{url}']\n",
    )
    with pytest.raises(ConfigError) as refused:
        load_config(path)
    assert "reload URL" in str(refused.value)
    assert "PASSW0RD" not in str(refused.value)
