"""Trace tables (`sim.tables`), the store probe that must not change a run, and the plots' needs."""

from __future__ import annotations

import configparser
import re
from pathlib import Path

from commy.core.hlc import make_stamp
from sim.explore import StoreProbe
from sim.faults import FaultPlan
from sim.replay import record
from sim.scenarios import run_scenario
from sim.tables import SNAPSHOT, Table, client_table, peer_state_table, state_spans, write_table

ROOT = Path(__file__).resolve().parents[2]
COLUMNS = ("time", "node", "actor", "event", "detail")


def trace(*rows: tuple[object, ...]) -> Table:
    return Table([dict(zip(COLUMNS, r, strict=True)) for r in rows], COLUMNS)


def change(t: float, observer: str, peer: str, old: str, new: str) -> tuple[object, ...]:
    return (t, observer, "heartbeat", "log:peer_state", ("info", {"peer": peer, "old": old, "new": new}))


def test_state_spans_cover_the_run_from_joining_or_from_a_snapshot() -> None:
    rows = trace(change(1.0, "n1", "n2", "joining", "healthy"), change(5.0, "n1", "n2", "healthy", "suspected"),
                 change(6.0, "n1", "n2", "suspected", "down"), (2.0, "n2", "recorder", SNAPSHOT, ("n1", "healthy")),
                 (3.0, "n3", "sim", "crash", 1))
    states = peer_state_table(rows)
    assert states.column("new") == ["healthy", "suspected", "down", "healthy"] and states.rows[3]["old"] is None
    spans = state_spans(states, ["n1", "n2"], 10.0)
    assert [(s["state"], s["start"], s["end"]) for s in spans.where(observer="n1")] == [
        ("joining", 0.0, 1.0), ("healthy", 1.0, 5.0), ("suspected", 5.0, 6.0), ("down", 6.0, 10.0)]
    assert [(s["state"], s["start"], s["end"]) for s in spans.where(observer="n2")] == [("healthy", 2.0, 10.0)]


STAMP = make_stamp(1_000, 0, 2)
CLIENT_TRACE = trace(
    (0.1, "c1", "client", "c:auth", ("n1", "acme")),
    (0.2, "n1", "sim", "crash", 1),  # not a client's
    (0.5, "c1", "client", "c:ack", ("x", STAMP, "replicated")),
    (1.0, "c1", "client", "c:lost", ("n1", "reset")),
    (1.1, "c1", "client", "c:resumed", ("n2", ("acme",), 1)),
    (1.2, "c1", "client", "c:error", ("SetVariables", "unavailable")),
    (1.3, "c1", "client", "c:error", ("Subscribe", "not_found")),  # not a write
    (5.5, "c1", "client", "c:timeout", ("n2", "SetVariables")),
    (5.6, "c1", "client", "c:timeout", ("n2", "GetVariables")),  # not a write
    (5.7, "c2", "client", "c:recv", ("changed", "acme", "x", STAMP)),
)


def test_the_client_table_follows_each_client_from_node_to_node() -> None:
    table = client_table(CLIENT_TRACE)
    assert len(table) == 9 and table.column("event")[:4] == ["auth", "ack", "lost", "resumed"]
    assert [(r["node"], r["event"]) for r in table.where(client="c1")][2:5] == [
        ("n1", "lost"), ("n2", "resumed"), ("n2", "error")]
    assert table.where(client="c2").rows[0]["node"] == ""  # never seen connecting


def test_the_write_table_has_acked_refused_and_timed_out_writes() -> None:
    writes = write_table(CLIENT_TRACE)
    assert [(r["time"], r["node"], r["outcome"]) for r in writes] == [
        (0.5, "n1", "acked"), (1.2, "n2", "unavailable"), (5.5, "n2", "unknown")]
    assert (writes.rows[0]["variable"], writes.rows[0]["origin"], writes.rows[0]["concern"]) == ("x", 2, "replicated")


def test_a_write_to_a_frozen_node_times_out_and_is_in_the_write_table() -> None:
    rec = record("failover", seed=3, faults=FaultPlan.parse(pause=["n2@2s..8s"]))
    timeouts = client_table(rec.trace).where(event="timeout")
    unknown = write_table(rec.trace).where(outcome="unknown")
    assert len(unknown) == len(timeouts.where(lambda r: r["detail"][1] == "SetVariables")) > 0
    assert set(unknown.column("node")) == {"n2"}


def test_the_store_probe_leaves_the_run_and_its_hash_unchanged() -> None:
    probe = StoreProbe(every=0.1)
    probed = record("failover", seed=3, on_cluster=probe.attach)
    assert probe.samples and len(probe.values) > 100  # it did read the stores, many times
    assert probed.result.trace_hash == run_scenario("failover", seed=3).trace_hash


def test_histograms_of_more_series_than_node_colours() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sim.plot import NODE_COLOURS
    from sim.plot_stats import plot_histograms

    samples = {f"s{i}": [0.1 * i, 0.2 * i, 0.3] for i in range(len(NODE_COLOURS) + 2)}
    fig = plot_histograms(samples)
    assert len(fig.axes) == len(samples)
    plt.close(fig)


def test_the_plot_extras_require_the_matplotlib_the_plots_use() -> None:
    import matplotlib

    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    for extra in ("plot", "dev"):
        pin = re.search(r"^matplotlib>=(\d+)\.(\d+)", cfg["options.extras_require"][extra], flags=re.M)
        assert pin and (int(pin[1]), int(pin[2])) >= (3, 9), f"[{extra}]: boxplot(tick_labels=) needs matplotlib 3.9"
    assert tuple(int(x) for x in matplotlib.__version__.split(".")[:2]) >= (3, 9)
