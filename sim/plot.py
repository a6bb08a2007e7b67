"""Plain tables and plots of a simulated run, for notebooks and reports.

`StateLog.attach(cluster)` subscribes to a cluster's trace and collects two plain tables as the
run goes: every heartbeat peer-state change (`time, observer, peer, old, new`) and every fault
(`time, node, event, detail`). `plot_peer_states` draws one horizontal band per (observer, peer)
pair, coloured by the observer's view of that peer over time, with the faults as vertical lines.
matplotlib is imported only when plotting (it is in the `dev` extra, not a runtime dependency).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sim.checkers import peer_change
from sim.timeline import FAULT_EVENTS
from sim.trace import Row

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from sim.cluster import SimCluster

STATE_COLOURS = {
    "joining": "#bdbdbd",
    "healthy": "#4caf50",
    "suspected": "#ffb300",
    "down": "#e53935",
    "left": "#5e35b1",
}


@dataclass
class StateLog:
    """Peer-state changes and faults of one run, as lists of plain dicts."""

    changes: list[dict[str, Any]] = field(default_factory=list)
    faults: list[dict[str, Any]] = field(default_factory=list)

    def attach(self, cluster: SimCluster) -> None:
        cluster.trace.subscribe(self._on_row, FAULT_EVENTS | {"log:peer_state"})

    def _on_row(self, row: Row) -> None:
        change = peer_change(row)
        if change is not None:
            peer, old, new = change
            self.changes.append({"time": row[0], "observer": row[1], "peer": peer, "old": old, "new": new})
        else:
            self.faults.append({"time": row[0], "node": row[1], "event": row[3], "detail": row[4]})

    def state_at(self, observer: str, peer: str, t: float) -> str:
        """The observer's view of the peer at time t ("joining" before any change)."""
        state = "joining"
        for c in self.changes:
            if c["time"] > t:
                break
            if c["observer"] == observer and c["peer"] == peer:
                state = c["new"]
        return str(state)


def plot_peer_states(log: StateLog, nodes: list[str], end: float, *, title: str = "") -> Figure:
    """One band per (observer -> peer), coloured by state; faults as dashed vertical lines."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    pairs = [(a, b) for a in nodes for b in nodes if a != b]
    fig, ax = plt.subplots(figsize=(10, 0.35 * len(pairs) + 1.5))
    for y, (a, b) in enumerate(pairs):
        segments: list[tuple[float, str]] = [(0.0, "joining")]
        segments += [(c["time"], c["new"]) for c in log.changes if c["observer"] == a and c["peer"] == b]
        for (start, state), (stop, _) in zip(segments, [*segments[1:], (end, "")], strict=True):
            ax.broken_barh([(start, max(stop - start, 1e-9))], (y - 0.4, 0.8), color=STATE_COLOURS[state])
    for f in log.faults:
        ax.axvline(f["time"], color="black", linestyle="--", linewidth=0.8)
        label = f["event"] if f["node"] == "*" else f"{f['node']} {f['event']}"
        ax.text(f["time"], len(pairs) - 0.3, " " + label, fontsize=8, va="bottom")
    ax.set_yticks(range(len(pairs)), [f"{a} sees {b}" for a, b in pairs])
    ax.set_xlim(0, end)
    ax.set_ylim(-0.6, len(pairs) + 0.4)
    ax.set_xlabel("simulated seconds")
    ax.legend(handles=[Patch(color=c, label=s) for s, c in STATE_COLOURS.items()], loc="upper left",
              bbox_to_anchor=(1.0, 1.0), fontsize=8)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig
