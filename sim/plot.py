"""Plots of simulated runs, drawn from trace tables (`sim.tables`), for notebooks and the README.

Every function returns a matplotlib `Figure` and takes what a notebook has at hand: a
`sim.replay.Recording` (its trace table, nodes and duration), or a trace `Table`, the node ids and
the end time. matplotlib is imported only inside the functions: it is an optional extra
(`pip install commy[plot]`), not a dependency of the simulator.

- `plot_peer_states`: one band per (observer, peer), coloured by the observer's view over time
  (hatched while the observer itself is crashed or paused); faults are dashed vertical lines.
- `plot_failover`: the peer-state bands, then one lane per client (each acknowledged write a tick
  coloured by the node that took it, each value its subscription received a grey dot above, a
  cross where the connection was lost, a triangle where the session resumed, a red dot where a
  write was refused or timed out), then acknowledged and other writes per quarter second.
- `plot_histograms`, `plot_detector_study`, `plot_convergence` and `plot_changes`: in
  `sim.plot_stats` (sweeps, detector settings, replicas converging, a subscription's values).

`python -m sim.plot OUT.png [SCENARIO SEED]` draws `plot_failover` of a run to a file (the README's
figure: `python -m sim.plot docs/failover-timeline.png failover-wide 3`).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from sim.tables import Table, client_table, fault_table, outage_spans, peer_state_table, state_spans, write_table

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from sim.replay import Recording

STATE_COLOURS = {
    "joining": "#bdbdbd",
    "healthy": "#4caf50",
    "suspected": "#ffb300",
    "down": "#e53935",
    "left": "#5e35b1",
}
NODE_COLOURS = ("#1e88e5", "#43a047", "#fb8c00", "#8e24aa", "#00acc1", "#6d4c41", "#d81b60", "#546e7a", "#c0ca33")
BUCKET = 0.25


def node_colour(node: str, nodes: Sequence[str]) -> str:
    return NODE_COLOURS[list(nodes).index(node) % len(NODE_COLOURS)] if node in nodes else "#9e9e9e"


def unpack(source: Recording | Table, nodes: Sequence[str] | None, end: float | None) -> tuple[Table, list[str],
                                                                                                float]:
    """(trace table, node ids, end time) from a Recording, or from a table plus the two others."""
    if isinstance(source, Table):
        if nodes is None or end is None:
            raise ValueError("a trace table needs `nodes` and `end`")
        return source, list(nodes), float(end)
    return source.trace, list(nodes or source.nodes), float(source.result.duration if end is None else end)


def fault_lines(ax: Axes, trace: Table, *, label: bool = True) -> None:
    """Dashed vertical lines at each fault, named at the top of the axes when `label`."""
    for f in fault_table(trace):
        if f["event"] == "configure" and f["time"] > 0 and "loss" in str(f["detail"]):
            continue  # the heal-and-quiesce clearing message faults: not worth a line
        ax.axvline(f["time"], color="black", linestyle="--", linewidth=0.8, alpha=0.7)
        if label:
            text = f["event"] if f["node"] == "*" else f"{f['node']} {f['event']}"
            ax.annotate(" " + text, (f["time"], 1.0), xycoords=("data", "axes fraction"), fontsize=8, va="bottom",
                        rotation=0)


def draw_peer_states(ax: Axes, trace: Table, nodes: Sequence[str], end: float,
                     pairs: Sequence[tuple[str, str]] | None = None) -> None:
    from matplotlib.patches import Patch

    pairs = list(pairs) if pairs is not None else [(a, b) for a in nodes for b in nodes if a != b]
    spans = state_spans(peer_state_table(trace), nodes, end)
    for y, (a, b) in enumerate(pairs):
        bars = [(s["start"], max(s["end"] - s["start"], 1e-9)) for s in spans.where(observer=a, peer=b)]
        colours = [STATE_COLOURS.get(s["state"], "#000000") for s in spans.where(observer=a, peer=b)]
        ax.broken_barh(bars, (y - 0.4, 0.8), facecolors=colours)
    for out in outage_spans(trace, end):  # a crashed or frozen observer has no view: grey it out
        for y, (a, _) in enumerate(pairs):
            if a == out["node"]:
                ax.broken_barh([(out["start"], out["end"] - out["start"])], (y - 0.4, 0.8), facecolors="white",
                               alpha=0.75, hatch="//", edgecolor="#9e9e9e", linewidth=0)
    ax.set_yticks(range(len(pairs)), [f"{a} sees {b}" for a, b in pairs], fontsize=8)
    ax.set_ylim(len(pairs) - 0.4, -0.6)  # the first pair on top
    ax.set_xlim(0, end)
    ax.legend(handles=[Patch(color=c, label=s) for s, c in STATE_COLOURS.items()], loc="upper left",
              bbox_to_anchor=(1.0, 1.0), fontsize=8)


def plot_peer_states(source: Recording | Table, nodes: Sequence[str] | None = None, end: float | None = None, *,
                     title: str = "", pairs: Sequence[tuple[str, str]] | None = None) -> Figure:
    """One band per (observer -> peer), coloured by state; faults as dashed vertical lines."""
    import matplotlib.pyplot as plt

    trace, ids, stop = unpack(source, nodes, end)
    count = len(pairs) if pairs is not None else len(ids) * (len(ids) - 1)
    fig, ax = plt.subplots(figsize=(10, 0.3 * count + 1.6))
    draw_peer_states(ax, trace, ids, stop, pairs)
    fault_lines(ax, trace)
    ax.set_xlabel("simulated seconds")
    if title:
        ax.set_title(title, pad=14)
    fig.tight_layout()
    return fig


def draw_clients(ax: Axes, trace: Table, nodes: Sequence[str]) -> None:
    """One lane per client: writes as ticks coloured by node, losses and resumes marked."""
    from matplotlib.lines import Line2D

    events = client_table(trace)
    clients = sorted({r["client"] for r in events}, key=lambda c: (len(c), c))
    writes = write_table(trace)
    received = events.where(event="recv")
    for y, c in enumerate(clients):
        got = received.where(client=c).column("time")
        ax.scatter(got, [y + 0.28] * len(got), marker=".", s=3, color="#9e9e9e", linewidths=0)
        acked = writes.where(client=c, outcome="acked")
        ax.scatter(acked.column("time"), [y] * len(acked), marker="|", s=60,
                   c=[node_colour(n, nodes) for n in acked.column("node")], linewidths=1)
        refused = writes.where(client=c).where(lambda r: r["outcome"] != "acked")
        ax.scatter(refused.column("time"), [y] * len(refused), marker=".", s=30, color="#e53935")
        for r in events.where(client=c, event="lost"):
            ax.scatter([r["time"]], [y], marker="x", s=60, color="black", zorder=3)
        for r in events.where(client=c, event="resumed"):
            ax.scatter([r["time"]], [y], marker="^", s=60, color="#4caf50", zorder=3)
            ax.annotate(f" -> {r['node']}", (r["time"], y), fontsize=8, va="center")
    ax.set_yticks(range(len(clients)), [f"client {c}" for c in clients], fontsize=8)
    ax.set_ylim(max(len(clients), 1) - 0.4, -0.6)
    handles = [Line2D([], [], marker="|", linestyle="", color=node_colour(n, nodes), label=f"write via {n}")
               for n in nodes]
    handles += [Line2D([], [], marker="x", linestyle="", color="black", label="connection lost"),
                Line2D([], [], marker="^", linestyle="", color="#4caf50", label="session resumed"),
                Line2D([], [], marker=".", linestyle="", color="#e53935", label="write refused or unknown"),
                Line2D([], [], marker=".", linestyle="", color="#9e9e9e", label="value received")]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)


def draw_write_rate(ax: Axes, trace: Table, end: float) -> None:
    writes = write_table(trace)
    edges = [i * BUCKET for i in range(int(end / BUCKET) + 2)]
    acked = writes.where(outcome="acked").column("time")
    refused = writes.where(lambda r: r["outcome"] != "acked").column("time")
    ax.hist([acked, refused], bins=edges, stacked=True, color=["#1e88e5", "#e53935"],
            label=["acknowledged", "refused, failed or unknown"])
    ax.set_ylabel(f"writes per {BUCKET:g} s", fontsize=8)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)


def plot_failover(source: Recording | Table, nodes: Sequence[str] | None = None, end: float | None = None, *,
                  title: str = "", pairs: Sequence[tuple[str, str]] | None = None) -> Figure:
    """Peer states, client lanes and the write rate of one run, on one time axis."""
    import matplotlib.pyplot as plt

    trace, ids, stop = unpack(source, nodes, end)
    count = len(pairs) if pairs is not None else len(ids) * (len(ids) - 1)
    lanes = len({r["client"] for r in client_table(trace)})
    heights = [0.26 * count + 0.4, 0.3 * lanes + 0.4, 1.6]
    fig, axes = plt.subplots(3, 1, figsize=(11, sum(heights) + 1.2), sharex=True,
                             gridspec_kw={"height_ratios": heights})
    draw_peer_states(axes[0], trace, ids, stop, pairs)
    draw_clients(axes[1], trace, ids)
    draw_write_rate(axes[2], trace, stop)
    for i, ax in enumerate(axes):
        fault_lines(ax, trace, label=i == 0)
    axes[-1].set_xlabel("simulated seconds")
    axes[-1].set_xlim(0, stop)
    if title:
        axes[0].set_title(title, pad=14)
    fig.tight_layout()
    return fig


def main(argv: Sequence[str]) -> int:
    """`python -m sim.plot OUT.png [SCENARIO [SEED]]`: the failover figure of a run, to a file."""
    if not 1 <= len(argv) <= 3:
        print(main.__doc__)
        return 2
    import matplotlib

    matplotlib.use("Agg")
    from sim.replay import record

    name = argv[1] if len(argv) > 1 else "failover-wide"
    seed = int(argv[2]) if len(argv) > 2 else 3
    rec = record(name, seed=seed)
    fig = plot_failover(rec, title=f"{name}, seed {seed}")
    fig.savefig(argv[0], dpi=90)
    print(f"wrote {argv[0]} (trace-hash {rec.result.trace_hash})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
