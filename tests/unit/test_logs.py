"""Structured logs: JSON lines off a terminal, readable lines on one (a real pseudo-terminal here),
the level threshold, the counts the metrics read, and `commy serve`'s flags for them."""

from __future__ import annotations

import io
import json
import os
import re
import select
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

import pytest

from commy.cli import build_parser
from commy.runtime import logs
from commy.runtime.local_cluster import write_cluster_files
from commy.runtime.logs import EventCounts, log_sink_for, text_log_sink
from commy.runtime.serve import run_serve_cli

LINE = re.compile(r"^\d\d:\d\d:\d\d\.\d{3} (?P<level>[A-Z]+) +(?P<rest>.*)$")
ANSI = re.compile(r"\033\[[0-9;]*m")


@contextmanager
def terminal() -> Iterator[tuple[TextIO, int]]:
    """A text stream on the slave side of a new pseudo-terminal, and the master fd to read it."""
    master, slave = os.openpty()
    stream = open(slave, "w", encoding="utf-8", closefd=True)  # closed below
    try:
        yield stream, master
    finally:
        stream.close()
        os.close(master)


def read_terminal(master: int) -> str:
    """Everything written so far: one read can return a part, so read until the terminal stays quiet."""
    chunks = []
    while select.select([master], [], [], 0.2)[0]:
        chunks.append(os.read(master, 65536))
    return b"".join(chunks).decode("utf-8").replace("\r\n", "\n")


def test_off_a_terminal_each_record_is_one_json_line() -> None:
    out = io.StringIO()
    sink = log_sink_for(out)
    sink("n1", "heartbeat", "info", "peer_state", {"peer": "n2", "old": "healthy", "new": "down"})
    sink("n1", "failover", "warning", "node_failed", {"peer": "n2", "at": 12.5, "node": "clash"})
    sink("n1", "gateway", "debug", "listening", {"url": "ws://x"})  # below info: left out
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert {k: first[k] for k in ("node", "actor", "level", "event", "peer", "old", "new")} == {
        "node": "n1", "actor": "heartbeat", "level": "info", "event": "peer_state", "peer": "n2", "old": "healthy",
        "new": "down"}
    assert isinstance(first["t"], float)
    assert second["field_node"] == "clash" and second["node"] == "n1"  # a field never hides the record's own keys


def test_on_a_terminal_each_record_is_one_readable_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    with terminal() as (stream, master):
        assert stream.isatty()
        sink = log_sink_for(stream, "debug")
        sink("n1", "heartbeat", "info", "peer_state", {"peer": "n2", "old": "healthy", "new": "down"})
        sink("n1", "clients", "warning", "session_revoked", {"tenant": "acme", "client": "bob smith", "n": 2,
                                                               "tags": ["a", "b"], "ok": True})
        sink("n1", "gateway", "debug", "listening", {"url": "ws://127.0.0.1:1"})
        text = read_terminal(master)
    assert "\033[" in text  # the level is coloured on a terminal
    lines = [ANSI.sub("", line) for line in text.splitlines()]
    parsed = [LINE.match(line) for line in lines]
    assert all(parsed), lines
    assert [m.group("level") for m in parsed if m] == ["INFO", "WARNING", "DEBUG"]
    assert [m.group("rest") for m in parsed if m] == [
        "n1 heartbeat peer_state peer=n2 old=healthy new=down",
        'n1 clients session_revoked tenant=acme client="bob smith" n=2 tags=["a","b"] ok=true',
        "n1 gateway listening url=ws://127.0.0.1:1",
    ]


def test_no_color_and_explicit_formats(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    with terminal() as (stream, master):
        log_sink_for(stream)("n1", "a", "error", "boom", {})
        assert "\033[" not in read_terminal(master)
        log_sink_for(stream, fmt="json")("n1", "a", "error", "boom", {})  # insisting on JSON on a terminal
        assert json.loads(read_terminal(master))["event"] == "boom"
    out = io.StringIO()
    log_sink_for(out, fmt="text")("n1", "a", "info", "hello", {"x": 1})
    assert out.getvalue().endswith(" INFO    n1 a hello x=1\n")


def test_levels_filter_and_bad_settings_are_refused() -> None:
    out = io.StringIO()
    sink = text_log_sink(out, "warning")
    for level in ("debug", "info", "warning", "error"):
        sink("n", "a", level, "e", {})
    assert [line.split()[1] for line in out.getvalue().splitlines()] == ["WARNING", "ERROR"]
    with pytest.raises(ValueError, match="log level"):
        log_sink_for(out, "verbose")
    with pytest.raises(ValueError, match="log format"):
        log_sink_for(out, "info", "xml")


def test_event_counts_see_every_record_whatever_the_level() -> None:
    out = io.StringIO()
    counts = EventCounts()
    sink = counts.wrap(log_sink_for(out, "error"))
    sink("n1", "clients", "error", "honeypot_touched", {"tenant": "acme", "service": "s", "detail": "written"})
    sink("n1", "heartbeat", "info", "peer_state", {"peer": "n2", "old": "joining", "new": "healthy"})
    sink("n1", "heartbeat", "info", "peer_state", {"peer": "n2", "old": "healthy", "new": "down"})
    assert counts.events == {"honeypot_touched": 1, "peer_state": 2}
    assert counts.levels == {"error": 1, "info": 2}
    assert len(out.getvalue().splitlines()) == 1


def test_serve_takes_log_level_format_and_http_public() -> None:
    parser = build_parser()
    args = parser.parse_args(["serve", "--log-level", "debug", "--log-format", "json", "--http-public"])
    assert (args.log_level, args.log_format, args.http_public) == ("debug", "json", True)
    args = parser.parse_args(["serve"])
    assert (args.log_level, args.log_format, args.http_public) == ("info", "auto", False)
    with pytest.raises(SystemExit):
        parser.parse_args(["serve", "--log-level", "loud"])


def test_serve_refuses_http_public_with_a_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_cluster_files(tmp_path, ["n1"], replication_factor=1)
    args = build_parser().parse_args(["serve", "--config", str(config), "--node", "n1", "--http-public"])
    assert run_serve_cli(args) == 2
    assert "[http] table" in capsys.readouterr().err


def test_a_reader_that_does_not_read_never_blocks_the_sink() -> None:
    # A pipe nobody reads holds 64 KiB; a sink writing on the caller's thread would block for good
    # on the first records. Off a terminal the sink only queues: the records beyond the queue are
    # dropped and counted, and once the reader catches up one record says how many.
    read_fd, write_fd = os.pipe()
    stream = open(write_fd, "w", encoding="utf-8", closefd=True)  # closed below
    reader = open(read_fd, encoding="utf-8", closefd=True)  # closed below
    try:
        sink = log_sink_for(stream)
        writer = next(w for w in logs._WRITERS if w.stream is stream)
        records = logs.QUEUE_LINES * 3
        done = threading.Event()

        def flood() -> None:
            for i in range(records):
                sink("n1", "hub", "info", "tick", {"i": i, "pad": "x" * 100})
            done.set()

        threading.Thread(target=flood, daemon=True).start()
        assert done.wait(60), "the sink blocked on a pipe nobody reads"
        assert writer.dropped > 0
        lines: list[str] = []
        drain = threading.Thread(target=lambda: lines.extend(reader), daemon=True)
        drain.start()
        writer.close()
        stream.close()
        drain.join(30)
        assert not drain.is_alive()
    finally:
        if not stream.closed:
            stream.close()
        reader.close()
    parsed = [json.loads(line) for line in lines]
    ticks = [r["i"] for r in parsed if r["event"] == "tick"]
    notices = [r for r in parsed if r["event"] == "log_records_dropped"]
    assert ticks == sorted(ticks) and len(set(ticks)) == len(ticks)  # in order, none twice
    assert notices and notices[0]["level"] == "warning"
    assert len(ticks) + sum(n["dropped"] for n in notices) == records  # every record written or counted


def test_close_writes_what_is_queued(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    with open(path, "w", encoding="utf-8") as stream:
        sink = log_sink_for(stream)
        for i in range(500):
            sink("n1", "hub", "info", "tick", {"i": i})
        logs.close_log_writers()
        assert [json.loads(line)["i"] for line in path.read_text().splitlines()] == list(range(500))
        sink("n1", "hub", "info", "late", {})  # after close: left out, never a crash
    assert "late" not in path.read_text()
