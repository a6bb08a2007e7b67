"""Plots of many runs and of replicas over time (the companions of `sim.plot`).

- `plot_histograms({"detection": [...], "failover": [...]}, bounds={"detection": 2.0})`: one
  histogram per named list of seconds, side by side, each with its bound (if any) as a dashed line
  and its p50/p99 in the title.
- `plot_detector_study(table)`: the rows of `sim.explore.detector_study` as detection-time box
  plots per setting next to the false DOWNs each setting produced.
- `plot_convergence(recording, probe, tenant, variable)`: for a run watched by a
  `sim.explore.StoreProbe`, the peer states, whose write each holder of the tenant's service has
  for one variable, how far behind each holder is (the age of the stalest value it holds), the
  count of variables the holders disagree on, and the writes acknowledged or refused per node.
- `plot_changes(changes)`: the values a subscription received, by version (for the quickstart).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sim.plot import NODE_COLOURS, draw_peer_states, fault_lines, node_colour
from sim.stats import Distribution
from sim.tables import Table, write_table

WRITER_COLOURS = ("#1e88e5", "#e53935", "#fdd835", "#43a047", "#8e24aa", "#fb8c00", "#00acc1", "#6d4c41")

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from sim.explore import StoreProbe
    from sim.replay import Recording


def plot_histograms(samples: Mapping[str, Sequence[float]], *, bounds: Mapping[str, float] | None = None,
                    title: str = "", unit: str = "s") -> Figure:
    import matplotlib.pyplot as plt

    names = list(samples)
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.2), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        values = list(samples[name])
        dist = Distribution.of(values)
        colour = NODE_COLOURS[names.index(name) % len(NODE_COLOURS)]  # more series than colours: round again
        ax.hist(values, bins=min(30, max(5, len(values) // 4)), color=colour)
        bound = (bounds or {}).get(name)
        if bound is not None:
            ax.axvline(bound, color="black", linestyle="--", linewidth=1, label=f"bound {bound:g} {unit}")
            ax.legend(fontsize=8)
        heading = name.replace("_", " ")
        if dist is not None:
            heading += f"\n{dist.count} samples, p50 {dist.p50:.3g} {unit}, p99 {dist.p99:.3g} {unit}"
        ax.set_title(heading, fontsize=9)
        ax.set_xlabel(unit)
    axes[0][0].set_ylabel("samples")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_detector_study(study: Table, *, bound: float | None = 2.0, title: str = "") -> Figure:
    import matplotlib.pyplot as plt

    settings = list(dict.fromkeys(study.column("setting")))
    detection = [[x for row in study.where(setting=s) for x in row["detected"]] for s in settings]
    false_down = [sum(study.where(setting=s).column("false_down")) for s in settings]
    labels = [s.replace(",", "\n") for s in settings]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8), gridspec_kw={"width_ratios": [3, 2]})
    left.boxplot([d or [float("nan")] for d in detection], tick_labels=labels)
    if bound is not None:
        left.axhline(bound, color="black", linestyle="--", linewidth=1, label=f"{bound:g} s bound")
        left.legend(fontsize=8)
    left.set_ylabel("seconds from fault to DOWN")
    left.set_title("detection time", fontsize=10)
    left.tick_params(axis="x", labelsize=8)
    right.bar(range(len(settings)), false_down, color=["#e53935" if f else "#4caf50" for f in false_down])
    right.set_xticks(range(len(settings)), labels, fontsize=8)
    right.set_title("false DOWNs (a reachable peer marked DOWN)", fontsize=10)
    for i, f in enumerate(false_down):
        right.annotate(str(f), (i, f), ha="center", va="bottom", fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_convergence(rec: Recording, probe: StoreProbe, tenant: str, variable: str | None = None, *,
                     title: str = "") -> Figure:
    """Replicas of one tenant's service over a run (see the module docstring)."""
    import matplotlib.pyplot as plt

    nodes, end = rec.nodes, float(rec.result.duration)
    values = probe.values.where(tenant=tenant)
    variables = sorted(set(values.column("variable")))
    variable = variable or (variables[0] if variables else "")
    holders = [n for n in nodes if values.where(node=n)]
    pairs = len(nodes) * (len(nodes) - 1)
    ratios = [0.17 * pairs + 0.4, 0.3 * len(holders) + 0.5, 1.6, 1.1, 0.25 * len(nodes) + 0.4]
    fig, axes = plt.subplots(5, 1, figsize=(11, sum(ratios) + 1.5), sharex=True, gridspec_kw={"height_ratios": ratios})
    draw_peer_states(axes[0], rec.trace, nodes, end)
    axes[0].tick_params(axis="y", labelsize=6)
    _draw_holders(axes[1], values.where(variable=variable), holders)
    axes[1].set_title(f"{tenant}/{variable}: whose write each holder has", fontsize=9)
    for node in holders:
        stalest: dict[float, float] = {}
        for r in values.where(node=node):  # the oldest value the node holds, at each sample
            stalest[r["time"]] = max(stalest.get(r["time"], 0.0), r["age"])
        axes[2].plot(list(stalest), list(stalest.values()), color=node_colour(node, nodes), label=node)
    axes[2].set_ylabel("age of its oldest\nvalue (s)", fontsize=8)
    axes[2].set_title(f"{tenant}: how far behind each holder is", fontsize=9)
    axes[2].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    div = probe.divergence().where(tenant=tenant)
    axes[3].step(div.column("time"), div.column("differing"), where="post", color="#8e24aa")
    axes[3].set_ylabel("variables the\nholders disagree on", fontsize=8)
    axes[3].set_ylim(-0.2, max(len(variables), 1) + 0.2)
    _draw_writes_by_node(axes[4], rec.trace, nodes, end)
    for i, ax in enumerate(axes):
        fault_lines(ax, rec.trace, label=i == 0)
    axes[-1].set_xlabel("simulated seconds")
    axes[-1].set_xlim(0, end)
    if title:
        axes[0].set_title(title, pad=14)
    fig.tight_layout()
    return fig


def _draw_holders(ax: Any, values: Table, holders: Sequence[str]) -> None:
    """One lane per holder, a square per sample coloured by the client whose write it holds."""
    import matplotlib.pyplot as plt

    writers = sorted(set(values.column("writer")), key=lambda w: (len(w), w))
    colour = {w: WRITER_COLOURS[i % len(WRITER_COLOURS)] for i, w in enumerate(writers)}
    for y, node in enumerate(holders):
        rows = values.where(node=node).rows
        # a bar from each sample to the next, coloured by the write the node held then
        bars = [(r["time"], (nxt["time"] if nxt is not None else r["time"]) - r["time"])
                for r, nxt in zip(rows, [*rows[1:], None], strict=True)]
        ax.broken_barh(bars, (y - 0.35, 0.7), facecolors=[colour[r["writer"]] for r in rows])
    ax.set_yticks(range(len(holders)), holders, fontsize=8)
    ax.set_ylim(len(holders) - 0.4, -0.6)
    ax.legend(handles=[plt.Line2D([], [], marker="s", linestyle="", color=colour[w], label=f"written by {w}")
                       for w in writers], loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)


def _draw_writes_by_node(ax: Any, trace: Table, nodes: Sequence[str], end: float) -> None:
    writes = write_table(trace)
    for y, node in enumerate(nodes):
        ok = writes.where(node=node, outcome="acked")
        bad = writes.where(node=node).where(lambda r: r["outcome"] != "acked")
        ax.scatter(ok.column("time"), [y] * len(ok), marker="|", s=40, color=node_colour(node, nodes))
        ax.scatter(bad.column("time"), [y] * len(bad), marker="x", s=25, color="#e53935")
    ax.set_yticks(range(len(nodes)), [f"writes via {n}" for n in nodes], fontsize=7)
    ax.set_ylim(len(nodes) - 0.4, -0.6)
    ax.legend(handles=[ax.scatter([], [], marker="|", color="#1e88e5", label="acknowledged"),
                       ax.scatter([], [], marker="x", color="#e53935", label="refused, failed or timed out")],
              loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)


def as_float(value: bytes) -> float:
    """An 8-byte IEEE 754 double (the SDK's `set_float`), else NaN."""
    return float(struct.unpack("<d", value)[0]) if len(value) == 8 else float("nan")


def plot_changes(changes: Sequence[Any], *, decode: Callable[[bytes], float] = as_float, title: str = "") -> Figure:
    """The values of `VariableChanged` events (anything with name, value, version), by version."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3))
    for name in sorted({c.name for c in changes}):
        mine = [c for c in changes if c.name == name]
        ax.plot([c.version for c in mine], [decode(c.value) for c in mine], marker="o", label=name)
    ax.set_xlabel("version")
    ax.set_ylabel("value")
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig
