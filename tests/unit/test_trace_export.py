"""Traces as JSON lines (`sim.trace_export`): the documented schema, determinism, reading back."""

from __future__ import annotations

import enum
import io
import itertools
import json
from pathlib import Path

import pytest

from sim.faults import FaultPlan
from sim.scenarios import run_scenario
from sim.trace_export import END_KEYS, EVENT_KEYS, HEADER_KEYS, SCHEMA, export_run, jsonable, plan_of, read_trace

ROOT = Path(__file__).resolve().parents[2]


def export(name: str = "heartbeat-crash", **kwargs: object) -> tuple[str, object, int]:
    out = io.StringIO()
    result, rows = export_run(out, name, seed=kwargs.pop("seed", 7), **kwargs)  # type: ignore[arg-type]
    return out.getvalue(), result, rows


def test_a_trace_is_a_header_events_and_an_end_line_in_the_documented_shape() -> None:
    text, _, rows = export()
    lines = [json.loads(line) for line in text.splitlines()]
    header, events, end = lines[0], lines[1:-1], lines[-1]
    assert tuple(header) == HEADER_KEYS and header["type"] == "header" and header["schema"] == SCHEMA
    assert (header["scenario"], header["seed"], header["nodes"], header["duration"]) == ("heartbeat-crash", 7, 3, 10.0)
    assert header["node_ids"] == ["n1", "n2", "n3"] and header["faults"] == []
    assert header["replay"] == "commy sim run heartbeat-crash --seed 7 --nodes 3 --duration 10"
    assert all(tuple(e) == EVENT_KEYS and e["type"] == "event" for e in events)
    assert [e["seq"] for e in events] == list(range(len(events))) == list(range(rows))
    assert all(0 <= a["time"] <= b["time"] <= 10 for a, b in itertools.pairwise(events))
    assert tuple(end) == END_KEYS and end["rows"] == rows and end["violations"] == []
    reference = run_scenario("heartbeat-crash", seed=7)
    assert end["trace_hash"] == reference.trace_hash and end["events"] == reference.events  # the run is unchanged
    crash = next(e for e in events if e["event"] == "crash")
    assert (crash["time"], crash["node"], crash["actor"], crash["detail"]) == (5.0, "n3", "sim", 1)
    down = [e for e in events if e["event"] == "log:peer_state" and e["detail"][1]["new"] == "down"]
    assert {(e["node"], e["detail"][1]["peer"]) for e in down} == {("n1", "n3"), ("n2", "n3")}
    schema_doc = (ROOT / "docs" / "trace-schema.md").read_text(encoding="utf-8")
    for key in {*HEADER_KEYS, *EVENT_KEYS, *END_KEYS}:
        assert f"`{key}`" in schema_doc, f"docs/trace-schema.md does not document {key}"
    assert SCHEMA in schema_doc


def test_the_same_run_gives_the_same_bytes() -> None:
    plan = FaultPlan.parse(loss=0.05, partition=["2s..4s:n1|n2,n3"])
    first, _, _ = export(faults=plan, seed=3)
    second, _, _ = export(faults=plan, seed=3)
    assert first == second
    header = json.loads(first.splitlines()[0])
    assert header["faults"] == plan.args() and plan_of(header) == plan
    assert header["replay"].endswith("--loss 0.05 --partition '2s..4s:n1|n2,n3'")
    assert first.splitlines()[1].startswith('{"type":"event","seq":0,"time":0.0,"node":"*","actor":"sim",'
                                            '"event":"configure"')  # faults at time 0 are in the trace


def test_a_cluster_run_exports_every_row_as_json(tmp_path: Path) -> None:
    path = tmp_path / "failover.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        result, rows = export_run(f, "failover", seed=3)
    trace = read_trace(path)
    assert len(trace.events) == rows > 1000 and trace.trace_hash == result.trace_hash
    kinds = {e["event"] for e in trace.events}
    assert {"recv", "local", "c:ack", "c:resumed", "crash", "log:peer_state"} <= kinds
    assert read_trace(path, events=False).events == []  # the header and end line only, still checked


def test_only_some_events() -> None:
    text, result, rows = export(events=("crash", "log:peer_state"))
    events = [json.loads(line) for line in text.splitlines()[1:-1]]
    assert {e["event"] for e in events} == {"crash", "log:peer_state"} and rows == len(events) < result.events


class Colour(enum.Enum):
    RED = "red"


@pytest.mark.parametrize(("value", "expected"), [
    ((1, "a", None, True, 2.5), [1, "a", None, True, 2.5]),
    (b"\x00\xff", {"bytes": "AP8="}),
    ({"peer": "n3", 4: (1, 2)}, {"peer": "n3", "4": [1, 2]}),
    (Colour.RED, "red"),
    (float("nan"), "nan"),
    (float("-inf"), "-inf"),
    (frozenset({"b", "a"}), ["a", "b"]),
    (range(2), "range(0, 2)"),
])
def test_values_become_json(value: object, expected: object) -> None:
    assert jsonable(value) == expected
    json.dumps(jsonable(value), allow_nan=False)


@pytest.mark.parametrize(("edit", "message"), [
    (lambda lines: lines[1:], "starts with its header"),
    (lambda lines: lines[:-1], "ends before its end line"),
    (lambda lines: [lines[0], *lines[2:]], "seq 1, expected 0"),
    (lambda lines: [*lines, lines[1]], "a line after the end line"),
    (lambda lines: [lines[0], "[1, 2]", *lines[1:]], "not a JSON object"),
    (lambda lines: [lines[0], "{oops", *lines[1:]], "not JSON"),
    (lambda lines: [lines[0].replace("commy-trace/1", "commy-trace/9"), *lines[1:]], "starts with its header"),
    (lambda lines: [lines[0], lines[1].replace('"seq"', '"sequence"'), *lines[2:]], "expected the keys"),
    (lambda lines: [lines[0], '{"type":"gossip"}', *lines[1:]], "unknown line type"),
])
def test_a_damaged_file_is_refused_with_its_line(tmp_path: Path, edit: object, message: str) -> None:
    text, _, _ = export()
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join(edit(text.splitlines())) + "\n", encoding="utf-8")  # type: ignore[operator]
    with pytest.raises(ValueError, match=message):
        read_trace(path)


def test_a_failed_export_leaves_the_old_trace_file_as_it_was(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    import sim.trace_export
    from commy.cli import main

    path = tmp_path / "run.jsonl"
    path.write_text("the last good trace\n", encoding="utf-8")
    assert main(["sim", "export", "heartbeat-crash", "--trace", str(path), "--crash", "n9@1s"]) == 2  # bad option
    assert path.read_text(encoding="utf-8") == "the last good trace\n"

    def half_then_fail(out: io.StringIO, *args: object, **kwargs: object) -> None:
        out.write('{"type":"header"}\n')
        raise RuntimeError("the run broke")

    monkeypatch.setattr(sim.trace_export, "export_run", half_then_fail)
    assert main(["sim", "export", "heartbeat-crash", "--trace", str(path)]) == 1  # a bug, not a usage error
    assert "RuntimeError: the run broke" in capsys.readouterr().err
    assert path.read_text(encoding="utf-8") == "the last good trace\n" and [p.name for p in tmp_path.iterdir()] == [
        "run.jsonl"]  # and no temporary file left beside it
    monkeypatch.undo()
    assert main(["sim", "export", "heartbeat-crash", "--seed", "7", "--trace", str(path)]) == 0
    assert read_trace(path).trace_hash == run_scenario("heartbeat-crash", seed=7).trace_hash
    assert [p.name for p in tmp_path.iterdir()] == ["run.jsonl"]
    plain = tmp_path / "plain"
    plain.write_text("")
    assert path.stat().st_mode == plain.stat().st_mode  # the mode open() gives, not a temporary file's 0600
