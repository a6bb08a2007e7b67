"""`commy sim` with fault options, `replay`, `export`, stepping, and colours only on a terminal."""

from __future__ import annotations

import io
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from commy.cli import main
from sim.commands import cmd_replay
from sim.console import Style

ROOT = Path(__file__).resolve().parents[2]
ANSI = "\x1b["
FAULTS = ("--loss", "0.05", "--partition", "6s..8s:n2|n3", "--skew", "n3=+200ms")
SCHEDULE = "[(1.0, 'cut', (('n2',),)), (1.0, 'run', (3.0,)), (4.0, 'write', ('n2', 'acme', 'x', 'quorum')), " \
           "(4.0, 'run', (3.0,)), (7.0, 'finish', ())]"


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


def value(out: str, key: str) -> str:
    found = re.search(rf"^{key}: (.+)$", out, flags=re.M)
    assert found, f"no {key!r} line in:\n{out}"
    return found.group(1)


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_run_with_faults_prints_a_replay_command_that_reproduces_it(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run_cli(capsys, "sim", "run", "failover", "--seed", "3", *FAULTS)
    lines = out.splitlines()
    assert rc == 0 and lines[-3] == "invariants: ok" and lines[-1].startswith("trace-hash: ")
    assert "partition {n2} | {n3} | {n1}" in out and "every link: loss 0.05" in out  # the timeline shows them
    replay = value(out, "replay")
    assert replay == ("commy sim run failover --seed 3 --nodes 3 --duration 14 --loss 0.05 "
                      "--partition '6s..8s:n2|n3' --skew n3=+0.2s")
    rc2, again, _ = run_cli(capsys, *shlex.split(replay)[1:])
    assert rc2 == 0 and value(again, "trace-hash") == value(out, "trace-hash")
    _, other, _ = run_cli(capsys, "sim", "run", "failover", "--seed", "3")
    assert value(other, "trace-hash") != value(out, "trace-hash") and "replay:" not in other


def test_replay_reproduces_the_hash_of_run_and_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run_cli(capsys, "sim", "run", "failover", "--seed", "3", *FAULTS)
    digest = value(out, "trace-hash")
    rc, replayed, _ = run_cli(capsys, "sim", "replay", "3", "--scenario", "failover", *FAULTS, "--expect", digest)
    assert rc == 0 and replayed.splitlines()[-1] == "trace-hash: matches"
    assert replayed.splitlines()[:-1] == out.splitlines()  # the same run, line for line
    rc, wrong, _ = run_cli(capsys, "sim", "replay", "3", "--scenario", "failover", "--expect", digest)
    assert rc == 1 and wrong.splitlines()[-1] == f"trace-hash: MISMATCH: expected {digest}"


def test_replay_in_a_fresh_process_gives_the_same_hash(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run_cli(capsys, "sim", "run", "heartbeat-crash", "--seed", "4", "--crash", "n1@2s..3s",
                        "--loss", "0.1")
    command = [sys.executable, "-m", "commy.cli", "sim", "replay", "4", "--scenario", "heartbeat-crash", "--crash",
               "n1@2s..3s", "--loss", "0.1", "--expect", value(out, "trace-hash")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0 and done.stdout.splitlines()[-1] == "trace-hash: matches", done.stdout + done.stderr


def test_export_then_replay_from_the_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    rc, out, _ = run_cli(capsys, "sim", "export", "heartbeat-partition", "--seed", "2", "--loss", "0.02",
                         "--trace", str(path))
    assert rc == 0 and re.match(r"wrote \d+ rows \(\d+ events\) to .*run\.jsonl$", out.splitlines()[0])
    end = json.loads(path.read_text().splitlines()[-1])
    assert end["trace_hash"] == value(out, "trace-hash")
    rc, replayed, _ = run_cli(capsys, "sim", "replay", "--from", str(path))
    assert rc == 0 and replayed.splitlines()[-1] == "trace-hash: matches"
    assert "--loss 0.02" in value(replayed, "replay")


def test_export_to_stdout_keeps_stdout_json(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run_cli(capsys, "sim", "export", "heartbeat-crash", "--seed", "7", "--trace", "-",
                           "--events", "crash,log:peer_state")
    lines = [json.loads(line) for line in out.splitlines()]
    assert rc == 0 and lines[0]["type"] == "header" and lines[-1]["type"] == "end"
    assert {e["event"] for e in lines[1:-1]} == {"crash", "log:peer_state"}
    assert "wrote" in err and "trace-hash: 67b56faa" in err  # the README's run: same hash with or without export


def test_replay_steps_through_the_notable_rows() -> None:
    answers = iter(["", "", "q"])
    out = io.StringIO()
    args = ["sim", "replay", "7", "--scenario", "heartbeat-crash", "--step", "--color", "never"]
    from commy.cli import build_parser

    rc = cmd_replay(build_parser().parse_args(args), out, ask=lambda _: next(answers))
    text = out.getvalue()
    assert rc == 0 and text.startswith("stepping through ") and "(stopped after 3 of " in text
    assert "LinkUp" not in text and "n1 sees n2 HEALTHY (was joining)" in text  # notable rows only
    out = io.StringIO()
    rc = cmd_replay(build_parser().parse_args([*args, "--window", "5..7"]), out, ask=lambda _: "c")
    text = out.getvalue()
    assert "n3 crashes" in text and "n1 sees n3 DOWN (was suspected)" in text and "(stopped" not in text
    assert "was joining" not in text  # outside the window


def test_replay_a_schedule(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run_cli(capsys, "sim", "replay", "1", "--schedule", SCHEDULE, "--step")
    assert rc == 0, out
    assert "   4.000s #3 write n2 acme x quorum" in out and "partition {n2} | {n1, n3}" in out
    assert "w1 acme/x=acme:w1 (quorum via n2 at 4.000s: refused)" in out and "invariants: ok" in out
    rc, again, _ = run_cli(capsys, "sim", "replay", "1", "--schedule", SCHEDULE, "--expect",
                           value(out, "trace-hash"))
    assert rc == 0 and again.splitlines()[-1] == "trace-hash: matches"


@pytest.mark.parametrize(("args", "message"), [
    (("sim", "replay", "3"), "say what to replay"),
    (("sim", "replay", "--from", "/no/such/file.jsonl"), "--from"),
    (("sim", "replay", "--from", "t.jsonl", "--loss", "0.1"), "--from takes the scenario, the seed and the faults"),
    (("sim", "replay", "1", "--schedule", "[(1, 2)]"), "--schedule: not a list of (time, action, args)"),
    (("sim", "run", "failover", "--crash", "n9@1s"), "unknown node n9"),
    (("sim", "run", "failover", "--partition", "5s"), "say START..END:GROUPS"),
    (("sim", "run", "failover", "--loss", "2"), "--loss is a probability"),
    (("sim", "sweep", "failover", "--seeds", "1..2", "--crash", "n2@13s"), "before the heal-and-quiesce"),
    (("sim", "export", "failover", "--trace", "/no/such/dir/t.jsonl"), "--trace"),
    (("sim", "replay", "3", "--scenario", "heartbeat-crash", "--step", "--window", "a..b"), "--window"),
    (("sim", "replay", "3", "--scenario", "heartbeat-crash", "--window", "4..7"), "--all and --window go with --step"),
    (("sim", "replay", "1", "--schedule", "[(1.0, 'crash', ('n9',))]"),
     "--schedule: step 1 (1.0, 'crash', ('n9',)): unknown node 'n9'; the nodes are n1, n2, n3"),
    (("sim", "replay", "1", "--schedule", "[(1.0, 'run', (1.0,)), (2.0, 'write', ('n1', 'acme'))]"),
     "step 2 (2.0, 'write', ('n1', 'acme')): write takes (node, tenant, name, concern), got 2 argument(s)"),
    (("sim", "replay", "1", "--schedule", "[(1.0, 'explode', ())]"), "step 1 (1.0, 'explode', ()): unknown action"),
    (("sim", "replay", "1", "--schedule", "[(1.0, 'write', ('n1', 'acme', 'x', 'eventual'))]"), "unknown concern"),
    (("sim", "replay", "1", "--schedule", "[(1.0, 'cut', 'n2')]"), "its arguments a tuple"),
    (("sim", "replay", "1", "--schedule", SCHEDULE, "--nodes", "5", "--loss", "0.1"),
     "--schedule runs its own 3-node cluster: --nodes, fault options do not apply"),
    (("sim", "run", "no-such", "--seed", "1"), "unknown scenario"),
    (("sim", "sweep", "failover", "--seeds", "1", "--workers", "-1"), "--workers must be 0"),
    (("sim", "export", "failover", "--trace", "t.jsonl", "--crash", "n2@99s"), "before the heal-and-quiesce"),
])
def test_bad_arguments_are_one_clear_line(capsys: pytest.CaptureFixture[str], args: tuple[str, ...],
                                          message: str) -> None:
    rc, _, err = run_cli(capsys, *args)
    assert rc == 2 and message in err and "Traceback" not in err and err.startswith(f"commy sim {args[1]}: error: ")


# --------------------------------------------------------------------------- colours and terminals


def test_plain_when_piped_coloured_on_a_terminal(capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    _, piped, _ = run_cli(capsys, "sim", "run", "heartbeat-crash", "--seed", "7")
    assert ANSI not in piped
    monkeypatch.delenv("NO_COLOR", raising=False)
    terminal = FakeTerminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    assert main(["sim", "run", "heartbeat-crash", "--seed", "7"]) == 0
    coloured = terminal.getvalue()
    assert ANSI in coloured and "\x1b[1;31mDOWN\x1b[0m" in coloured
    assert re.sub(r"\x1b\[[0-9;]*m", "", coloured) == piped  # the same text, only painted
    monkeypatch.setenv("NO_COLOR", "1")
    terminal = FakeTerminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    main(["sim", "run", "heartbeat-crash", "--seed", "7"])
    assert terminal.getvalue() == piped
    forced = io.StringIO()  # not a terminal, but asked for
    monkeypatch.setattr(sys, "stdout", forced)
    main(["sim", "list", "--color", "always"])
    assert ANSI in forced.getvalue()


def test_style_decisions() -> None:
    assert Style.for_stream(FakeTerminal(), "auto", env={}) == Style(color=True, rich=True)
    assert Style.for_stream(FakeTerminal(), "auto", env={"NO_COLOR": "1"}) == Style(color=False, rich=True)
    assert Style.for_stream(FakeTerminal(), "auto", env={"NO_COLOR": ""}) == Style(color=True, rich=True)
    assert Style.for_stream(io.StringIO(), "auto", env={}) == Style()
    assert Style.for_stream(io.StringIO(), "always", env={"NO_COLOR": "1"}) == Style(color=True, rich=True)
    assert Style.for_stream(FakeTerminal(), "never", env={}) == Style(color=False, rich=True)
    assert Style().timeline_line("   5.000s n3 crashes") == "   5.000s n3 crashes"


def test_sweep_summary_is_a_table_on_a_terminal_and_lines_when_piped(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    args = ["sim", "sweep", "heartbeat-steady", "--seeds", "2..4", "--nodes", "3", "--duration", "12",
            "--loss", "0.4"]
    rc, piped, _ = run_cli(capsys, *args)
    assert rc == 1 and piped.splitlines()[1] == "faults: --loss 0.4" and ANSI not in piped
    replays = re.findall(r"^    replay: (.+)$", piped, flags=re.M)
    assert replays and all(r.endswith("--nodes 3 --duration 12 --loss 0.4") for r in replays)
    rc, again, _ = run_cli(capsys, *shlex.split(replays[0])[1:])
    assert rc == 1 and "invariants: VIOLATED: no-false-down" in again  # the failing seed fails again
    rc, table, _ = run_cli(capsys, *args, "--table")
    assert re.search(r"^\s+count\s+p50\s+p90\s+p99\s+max$", table, flags=re.M) and ANSI not in table
    assert "faults: --loss 0.4" in table and re.search(r"^  runs with violations\s+[1-3] of 3$", table, flags=re.M)
    terminal = FakeTerminal()
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setattr(sys, "stdout", terminal)
    assert main(args) == 1
    assert ANSI in terminal.getvalue() and "count" in terminal.getvalue()


def test_sweep_with_faults_over_two_workers_gives_the_same_summary(capsys: pytest.CaptureFixture[str]) -> None:
    args = ("sim", "sweep", "heartbeat-crash", "--seeds", "1..4", "--loss", "0.05", "--crash", "n1@2s..3s")
    rc1, one, _ = run_cli(capsys, *args)
    rc2, two, _ = run_cli(capsys, *args, "--workers", "2")
    keep = [line for line in one.splitlines() if not line.startswith(("wall time:", "simulated/real:"))]
    assert rc1 == rc2 and keep == [line for line in two.splitlines()
                                   if not line.startswith(("wall time:", "simulated/real:"))]
    assert "with 2 workers" in two and "faults: --loss 0.05 --crash n1@2s..3s" in one


# --------------------------------------------------------------------------- failures that are not usage errors


def test_a_plan_crossing_the_scenarios_own_restart_runs(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run_cli(capsys, "sim", "run", "heartbeat-restart", "--seed", "1", "--crash", "n3@2s..4s")
    assert rc == 0 and err == "" and value(out, "invariants") == "ok"


def test_an_error_inside_a_run_is_a_bug_with_a_traceback_and_its_replay(capsys: pytest.CaptureFixture[str],
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import sim.commands

    def broken(*args: object, **kwargs: object) -> None:
        raise ValueError("deep inside a handler")  # what used to pass for a bad argument

    monkeypatch.setattr(sim.commands, "run", broken)
    rc, out, err = run_cli(capsys, "sim", "run", "failover", "--seed", "5", "--loss", "0.1")
    assert rc == 1 and out == "" and "Traceback" in err and "ValueError: deep inside a handler" in err
    assert err.splitlines()[-1] == ("commy sim run: the run failed with an exception, a bug in commy or the simulator "
                                    "(seed 5); again with: commy sim run failover --seed 5 --nodes 3 --duration 14 "
                                    "--loss 0.1")


def test_replay_keeps_the_rows_only_when_stepping(monkeypatch: pytest.MonkeyPatch) -> None:
    import sim.commands
    from commy.cli import build_parser

    kept: list[int] = []
    real = sim.commands.record

    def spy(*args: object, **kwargs: object) -> object:
        rec = real(*args, **kwargs)  # type: ignore[arg-type]
        kept.append(len(rec.trace))
        return rec

    monkeypatch.setattr(sim.commands, "record", spy)
    args = ["sim", "replay", "7", "--scenario", "heartbeat-crash", "--color", "never"]
    plain, stepped = io.StringIO(), io.StringIO()
    assert cmd_replay(build_parser().parse_args(args), plain) == 0 and kept == []
    assert cmd_replay(build_parser().parse_args([*args, "--step"]), stepped, ask=lambda _: "c") == 0
    assert len(kept) == 1 and kept[0] > 300
    assert value(plain.getvalue(), "trace-hash") == value(stepped.getvalue(), "trace-hash")
