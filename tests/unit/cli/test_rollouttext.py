"""How `modelcache status` writes a rollout: bars, node states, the headline, the last line;
and how it polls: a new block only when something changed, a deadline that ends it."""

from __future__ import annotations

import io

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console

from modelcache.cli import status as status_command
from modelcache.cli.rolloutkube import MODEL_VERSION_MAX_BYTES, Snapshot, capped_json, follow
from modelcache.cli.rollouttext import (
    BAR_WIDTH,
    bar,
    headline,
    node_status,
    outcome_line,
    plain_lines,
    renderable,
)
from modelcache.cli.rolloutview import NodeRow, RolloutView, Wave


@given(st.floats(-1, 2, allow_nan=False))
def test_a_bar_is_always_as_wide_and_fills_with_the_fraction(fraction: float) -> None:
    drawn = bar(fraction)
    assert len(drawn) == BAR_WIDTH + 2
    filled = drawn.count("#")
    assert drawn == "[" + "#" * filled + "-" * (BAR_WIDTH - filled) + "]"
    assert filled == round(min(1.0, max(0.0, fraction)) * BAR_WIDTH)


def row(node: str, **changes: object) -> NodeRow:
    fields: dict[str, object] = {
        "node": node,
        "wave": None,
        "active": "v1",
        "serving": False,
        "state": "Cached",
        "bytes_done": 100,
        "bytes_total": 100,
        "pulled": 0,
        "bytes_from_peers": 0,
        "held": ("v1", "v2"),
        "error": None,
    }
    return NodeRow(**{**fields, **changes})  # type: ignore[arg-type]


def view(**changes: object) -> RolloutView:
    fields: dict[str, object] = {
        "namespace": "studio",
        "name": "sdxl",
        "target": "v2",
        "stable": "v1",
        "phase": "RollingOut",
        "step": "Waves",
        "ready": "1/2",
        "observed": True,
        "waves": (
            Wave(1, ("a",), canary=True, done=True),
            Wave(2, ("b",), canary=False, done=False),
        ),
        "nodes": (
            row("a", wave=1, active="v2", serving=True),
            row("b", wave=2, state="Pulling", bytes_done=25, pulled=25, bytes_from_peers=20),
        ),
        "failures": (),
        "problems": (),
    }
    return RolloutView(**{**fields, **changes})  # type: ignore[arg-type]


def test_each_node_says_what_it_does_for_the_rollout() -> None:
    assert node_status(row("a", active="v2", serving=True), "v2") == "serving v2"
    assert node_status(row("a", active="v2"), "v2") == "reloading v2"
    assert node_status(row("a", wave=2), "v2") == "flipping to v2"
    assert node_status(row("a", state="Pulling"), "v2") == "pulling v2"
    assert node_status(row("a", wave=1, error="reload failed"), "v2") == "failed"
    assert node_status(row("a", state="Failed", error="403"), "v2") == "failed"


def test_the_lines_show_waves_nodes_bars_and_the_share() -> None:
    lines = plain_lines(view())
    assert lines[0] == "studio/sdxl v2: RollingOut (Waves, wave 2), ready 1/2, from v1"
    assert lines[1:3] == ["  wave 1 (canary): a: done", "  wave 2: b: in progress"]
    assert lines[3].startswith("  a  wave 1  active v2  serving v2  [" + "#" * BAR_WIDTH + "] 100%")
    assert lines[4] == (
        "  b  wave 2  active v1  flipping to v2  [#####---------------]  25% 25 B/100 B, "
        "20 B from peers"
    )
    assert lines[5] == "  bytes of v2 pulled: 25 B, from L3 5 B (20%), from peers 20 B"


def test_the_headline_says_when_the_operator_has_not_seen_the_spec() -> None:
    assert headline(view(observed=False, phase="Available", step="Complete")).endswith(
        "the operator has not seen this spec yet"
    )


def test_the_last_line_says_where_it_settled_and_why() -> None:
    assert outcome_line(view(phase="Available", ready="2/2")) == (
        "studio/sdxl v2: Available, 2/2 nodes serve it"
    )
    failures = (("b", "reload failed: rank 16"),)
    reverted = view(phase="Degraded", step="Failed", failures=failures)
    assert outcome_line(reverted) == (
        "studio/sdxl v2: Degraded, back on v1 (b: reload failed: rank 16)"
    )
    within_threshold = view(phase="Degraded", step="Complete", failures=failures)
    assert outcome_line(within_threshold) == (
        "studio/sdxl v2: Degraded (b: reload failed: rank 16)"
    )
    assert outcome_line(view()) == "studio/sdxl v2: not settled (RollingOut)"


def test_a_terminal_gets_a_table_with_every_node() -> None:
    out = io.StringIO()
    Console(file=out, width=160, color_system=None).print(renderable(view()))
    text = out.getvalue()
    assert "wave 1 (canary): a: done" in text
    assert all(name in text for name in ("serving v2", "flipping to v2", "20 B"))


def snapshot(*versions: str) -> Snapshot:
    return Snapshot(
        {"metadata": {"resourceVersion": versions[0]}},
        [{"metadata": {"resourceVersion": v}} for v in versions[1:]],
    )


def test_follow_yields_a_snapshot_only_when_a_resource_version_changed() -> None:
    reads = iter([snapshot("1", "5"), snapshot("1", "5"), snapshot("2", "5"), snapshot("2", "6")])
    got = follow(lambda: next(reads), sleep=lambda _: None)
    assert [s.revision for s in (next(got), next(got), next(got))] == [
        ("1", "5"),
        ("2", "5"),
        ("2", "6"),
    ]


def test_follow_ends_at_its_deadline() -> None:
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    got = follow(lambda: snapshot("1"), deadline=3.0, clock=lambda: now[0], sleep=sleep)
    assert next(got).revision == ("1",)
    with pytest.raises(TimeoutError):
        next(got)
    assert now[0] == 3.0


class Answer:
    def __init__(self, data: bytes) -> None:
        self.data = data


def test_an_answer_over_its_cap_is_refused_before_parsing() -> None:
    with pytest.raises(ValueError, match="over"):
        capped_json(Answer(b"{" * (MODEL_VERSION_MAX_BYTES + 1)), MODEL_VERSION_MAX_BYTES, "mv")
    with pytest.raises(ValueError, match="not a JSON object"):
        capped_json(Answer(b"[]"), MODEL_VERSION_MAX_BYTES, "mv")
    assert capped_json(Answer(b'{"a": 1}'), MODEL_VERSION_MAX_BYTES, "mv") == {"a": 1}


def test_a_terminal_watch_redraws_until_the_rollout_settles() -> None:
    out = io.StringIO()
    console = Console(file=out, width=160, force_terminal=True, color_system=None)
    views = iter([view(), view(phase="Available", ready="2/2"), view(phase="Degraded")])
    settled = status_command._live(console, views)
    assert settled.phase == "Available"
    assert next(views).phase == "Degraded", "nothing read past the settled view"
    assert "ready 2/2" in out.getvalue()


def test_a_piped_watch_prints_a_block_per_change(capsys: pytest.CaptureFixture[str]) -> None:
    views = iter([view(), view(), view(ready="2/2", phase="Available")])
    assert status_command._lines(views).phase == "Available"
    blocks = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[")]
    assert len(blocks) == 2, "the same view twice is printed once"
    assert blocks[0].endswith("studio/sdxl v2: RollingOut (Waves, wave 2), ready 1/2, from v1")
    assert blocks[1].endswith("studio/sdxl v2: Available (Waves, wave 2), ready 2/2, from v1")
