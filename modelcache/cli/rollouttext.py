"""A rollout view as text: plain lines (logs, pipes, tests) or a rich table on a terminal.

Pure: a `RolloutView` in, lines or a renderable out; `modelcache status` prints them.
"""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from modelcache.cli.progress import human_bytes
from modelcache.cli.rolloutview import NodeRow, RolloutView

BAR_WIDTH = 20


def headline(view: RolloutView) -> str:
    """`studio/sdxl v2: RollingOut (Waves, wave 2), ready 1/2, from v1`."""
    where = [view.step] if view.step and view.step != view.phase else []
    if view.waves:
        where.append(f"wave {len(view.waves)}")
    detail = f" ({', '.join(where)})" if where else ""
    stable = f", from {view.stable}" if view.stable and view.stable != view.target else ""
    waiting = "" if view.observed else ", the operator has not seen this spec yet"
    return (
        f"{view.namespace}/{view.name} {view.target}: {view.phase}{detail}, "
        f"ready {view.ready}{stable}{waiting}"
    )


def bar(fraction: float, width: int = BAR_WIDTH) -> str:
    """`[#####---------------]`: a bar that needs no terminal."""
    filled = round(max(0.0, min(1.0, fraction)) * width)
    return "[" + "#" * filled + "-" * (width - filled) + "]"


def node_status(row: NodeRow, target: str) -> str:
    """What a node does for the rollout, in a word or two."""
    if row.error is not None and (row.state == "Failed" or row.wave is not None):
        return "failed"
    if row.serving:
        return f"serving {target}"
    if row.active == target:
        return f"reloading {target}"
    if row.wave is not None:
        return f"flipping to {target}"
    return f"{row.state.lower()} {target}"


def node_line(row: NodeRow, target: str) -> str:
    wave = f"wave {row.wave}" if row.wave is not None else "-"
    size = f"{human_bytes(row.bytes_done)}/{human_bytes(row.bytes_total)}"
    peers = f", {human_bytes(row.bytes_from_peers)} from peers" if row.bytes_from_peers else ""
    return (
        f"  {row.node}  {wave}  active {row.active or '-'}  {node_status(row, target)}  "
        f"{bar(row.fraction)} {row.fraction * 100:3.0f}% {size}{peers}"
    )


def bytes_line(view: RolloutView) -> str | None:
    share = view.l3_share
    if share is None:
        return None
    return (
        f"  bytes of {view.target} pulled: {human_bytes(view.pulled)}, "
        f"from L3 {human_bytes(view.bytes_from_l3)} ({share * 100:.0f}%), "
        f"from peers {human_bytes(view.bytes_from_peers)}"
    )


def wave_line(view: RolloutView, number: int) -> str:
    wave = view.waves[number - 1]
    kind = " (canary)" if wave.canary else ""
    done = "done" if wave.done else "in progress"
    return f"  wave {wave.number}{kind}: {', '.join(wave.nodes)}: {done}"


def error_lines(view: RolloutView) -> list[str]:
    lines = [f"  failed {node}: {reason}" for node, reason in view.failures]
    failed = {node for node, _ in view.failures}
    lines += [
        f"  error {r.node}: {r.error}" for r in view.nodes if r.error and r.node not in failed
    ]
    lines += [f"  {problem}" for problem in view.problems]
    return lines


def plain_lines(view: RolloutView) -> list[str]:
    """The whole view as lines a log or a test reads."""
    lines = [headline(view)]
    lines += [wave_line(view, w.number) for w in view.waves]
    lines += [node_line(r, view.target) for r in view.nodes]
    total = bytes_line(view)
    if total is not None:
        lines.append(total)
    return lines + error_lines(view)


def outcome_line(view: RolloutView) -> str:
    """The last line: where the rollout settled."""
    who = f"{view.namespace}/{view.name} {view.target}"
    if view.outcome == "Available":
        return f"{who}: Available, {view.ready} nodes serve it"
    if view.outcome is None:
        return f"{who}: not settled ({view.phase})"
    why = "; ".join(f"{n}: {r}" for n, r in view.failures) or "; ".join(view.problems)
    back = f", back on {view.stable}" if view.stable and view.step == "Failed" else ""
    return f"{who}: {view.outcome}{back}" + (f" ({why})" if why else "")


def renderable(view: RolloutView) -> RenderableType:
    """The view for a terminal: a headline, the waves, a table with a bar per node."""
    parts: list[RenderableType] = [Text(headline(view), style="bold")]
    parts += [Text(wave_line(view, w.number)) for w in view.waves]
    table = Table(box=None, pad_edge=False)
    for column in ("node", "wave", "active", "state", "pulled", "", "from peers"):
        table.add_column(column)
    for row in view.nodes:
        table.add_row(
            row.node,
            str(row.wave) if row.wave is not None else "-",
            row.active or "-",
            node_status(row, view.target),
            ProgressBar(total=1.0, completed=row.fraction, width=BAR_WIDTH),
            f"{human_bytes(row.bytes_done)}/{human_bytes(row.bytes_total)}",
            human_bytes(row.bytes_from_peers),
        )
    parts.append(table)
    total = bytes_line(view)
    if total is not None:
        parts.append(Text(total))
    parts += [Text(line, style="red") for line in error_lines(view)]
    return Group(*parts)
