"""The `commy sim` commands: `list`, `run`, `sweep`, `replay`, `export` (parsers in `commy.cli`).

Each `cmd_*` takes the parsed arguments and the output streams and returns the exit status, so
tests call them with fake streams. What they print is the contract README documents:

- `run` prints the timeline, the timing lines, `delivered: ...`, one `invariants: ...` line per
  finding, a `replay: <command>` line when something was violated or fault options were given,
  and `trace-hash: <64 hex>` last. On a terminal the timeline is coloured (`sim.console`).
- `sweep` shows a progress bar on stderr, then the summary: plain `key: value` lines when piped,
  a table on a terminal (or with `--table`).
- `replay` runs the same thing again -- a scenario and seed with the same options, the run a
  JSON-lines trace file names (`--from`), or a `sim.schedule` schedule (`--schedule`) -- prints
  what `run` prints, then checks the hash against `--expect` or the file's (`trace-hash: matches`;
  a mismatch exits 1). `--step` walks through the run's notable rows one at a time (waiting for
  Enter when stdin is a terminal; `--all` shows every row, `--window 4..7` a time window).
- `export` runs a scenario and writes its trace as JSON lines (`sim.trace_export`; `-` is stdout).
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import json
import os
import sys
from collections.abc import Callable
from typing import Any, TextIO

from sim.console import Style, summary_table
from sim.faults import FaultPlan, parse_time
from sim.replay import Recording, ScheduleStepper, record, run
from sim.scenarios import ScenarioResult
from sim.stepper import notable, step_text, walk
from sim.sweep import lines_for_run, parse_seeds, record_of

Ask = Callable[[str], str]


class UsageError(ValueError):
    """A bad argument: the command prints it and exits 2."""


def plan_of(args: argparse.Namespace) -> FaultPlan | None:
    plan = FaultPlan.parse(
        latency=args.latency, jitter=args.jitter, loss=args.loss, dup=args.dup, reorder=args.reorder,
        partition=args.partition or (), crash=args.crash or (), pause=args.pause or (), skew=args.skew or (),
        detector=args.detector)
    return None if plan.empty else plan


def _style(args: argparse.Namespace, out: TextIO) -> Style:
    return Style.for_stream(out, getattr(args, "color", "auto"))


def _report(result: ScenarioResult, faults: FaultPlan | None, style: Style, out: TextIO) -> None:
    """What `commy sim run` prints for a finished run (see the module docstring)."""
    for line in result.timeline:
        print(style.timeline_line(line), file=out)
    for line in lines_for_run(record_of(result.seed, result)):
        print(line, file=out)
    print(f"delivered: {result.delivered} messages in {result.duration:g} simulated s", file=out)
    for violation in result.violations:
        print(style.result_line(f"invariants: VIOLATED: {violation}"), file=out)
    if not result.violations:
        print(style.result_line("invariants: ok"), file=out)
    if result.violations or faults is not None:
        print(style.result_line(f"replay: {result.replay_command}"), file=out)
    print(style.result_line(f"trace-hash: {result.trace_hash}"), file=out)


def cmd_list(args: argparse.Namespace, out: TextIO | None = None) -> int:
    from sim.scenarios import list_scenarios

    out = out or sys.stdout
    style = _style(args, out)
    for name, description in list_scenarios():
        print(f"{style.paint(f'{name:24}', 'bold', 'cyan')} {description}", file=out)
    return 0


def cmd_run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    faults = plan_of(args)
    result = run(args.scenario, seed=args.seed, nodes=args.nodes, duration=args.duration, faults=faults)
    _report(result, faults, _style(args, out), out)
    return 1 if result.violations else 0


def cmd_sweep(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    from sim.progress import Progress
    from sim.sweep import sweep

    try:
        seeds = parse_seeds(args.seeds)
    except ValueError as exc:
        raise UsageError(f"--seeds: {exc}") from None
    faults = plan_of(args)
    bar = Progress(len(seeds), err, label=f"sweep {args.scenario}")
    try:
        summary = sweep(args.scenario, seeds, workers=args.workers, nodes=args.nodes, duration=args.duration,
                        fail_fast=args.fail_fast, progress=bar.update, faults=faults)
    finally:
        bar.close()  # end the bar's line before any message
    style = _style(args, out)
    if style.rich or args.table:
        lines = summary_table(summary, style, faults.command_text() if faults is not None else "")
    else:
        lines = summary.lines()
        if faults is not None:
            lines.insert(1, f"faults: {faults.command_text()}")
    for line in lines:
        print(line, file=out)
    if args.json:
        try:
            with open(args.json, "w", encoding="utf-8") as f:
                json.dump({**summary.as_json(), "faults": faults.args() if faults is not None else []}, f, indent=2)
        except OSError as exc:
            raise UsageError(f"--json: {exc}") from None
    return 1 if summary.failed else 0


def cmd_export(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    from sim.trace_export import export_run

    faults = plan_of(args)
    events = [e for e in args.events.split(",") if e] if args.events else None
    to_stdout = args.trace == "-"
    try:
        stream = out if to_stdout else open(args.trace, "w", encoding="utf-8")  # closed below
    except OSError as exc:
        raise UsageError(f"--trace: {exc}") from None
    try:
        result, rows = export_run(stream, args.scenario, seed=args.seed, nodes=args.nodes, duration=args.duration,
                                  faults=faults, events=events)
    finally:
        if not to_stdout:
            stream.close()
    said = err if to_stdout else out  # keep stdout pure JSON lines when the trace goes there
    print(f"wrote {rows} rows ({result.events} events) to {'stdout' if to_stdout else args.trace}", file=said)
    print(f"invariants: {'ok' if result.ok else f'{len(result.violations)} violated'}", file=said)
    print(f"trace-hash: {result.trace_hash}", file=said)
    return 1 if result.violations else 0


# --------------------------------------------------------------------------- replay


def _window(text: str | None) -> tuple[float, float]:
    if not text:
        return 0.0, float("inf")
    start, sep, end = text.partition("..")
    try:
        lo = parse_time(start) if start.strip() else 0.0
        hi = parse_time(end) if sep and end.strip() else float("inf")
    except ValueError as exc:
        raise UsageError(f"--window: {exc}") from None
    return lo, hi


def _asker(ask: Ask | None) -> Ask | None:
    """`input` when stdin is a terminal (someone presses Enter), else nothing: print everything."""
    if ask is not None:
        return ask
    try:
        return input if sys.stdin.isatty() else None
    except (AttributeError, ValueError):  # no stdin, or a closed one
        return None


def cmd_replay(args: argparse.Namespace, out: TextIO | None = None, ask: Ask | None = None) -> int:
    out = out or sys.stdout
    style = _style(args, out)
    if args.schedule is not None:
        return _replay_schedule(args, style, out, _asker(ask) if args.step else None)
    expect = args.expect or ""
    name, seed, nodes, duration, faults = args.scenario, args.seed, args.nodes, args.duration, plan_of(args)
    if args.source:
        if any(x is not None for x in (name, seed, nodes, duration, faults)):
            raise UsageError("--from takes the scenario, the seed and the faults from the file: give none of them")
        from sim.trace_export import plan_of as header_plan
        from sim.trace_export import read_trace

        try:
            saved = read_trace(args.source, events=False)
        except (OSError, ValueError) as exc:
            raise UsageError(f"--from: {exc}") from None
        h = saved.header
        name, seed, nodes, duration = h["scenario"], int(h["seed"]), int(h["nodes"]), float(h["duration"])
        faults, expect = header_plan(h), expect or saved.trace_hash
    elif name is None or seed is None:
        raise UsageError("say what to replay: SEED --scenario NAME, --from TRACE.jsonl, or SEED --schedule '[...]'")
    rec = record(name, seed=seed, nodes=nodes, duration=duration, faults=faults)
    if args.step:
        _step(rec, args, style, out, _asker(ask))
    _report(rec.result, faults, style, out)
    if expect:
        same = expect == rec.result.trace_hash
        line = "trace-hash: matches" if same else f"trace-hash: MISMATCH: expected {expect}"
        print(style.result_line(line), file=out)
        if not same:
            return 1
    return 1 if rec.result.violations else 0


def _step(rec: Recording, args: argparse.Namespace, style: Style, out: TextIO, ask: Ask | None) -> None:
    lo, hi = _window(args.window)
    rows = rec.trace.between(lo, hi)
    shown = rows if args.all else rows.where(notable)
    print(style.paint(f"stepping through {len(shown)} of {len(rec.trace)} rows "
                      f"({'all' if args.all else 'notable'}; Enter: next, c: continue, q: stop)", "bold"), file=out)
    walk([step_text(r, style) for r in shown], out, ask)


def _replay_schedule(args: argparse.Namespace, style: Style, out: TextIO, ask: Ask | None) -> int:
    if args.seed is None:
        raise UsageError("--schedule needs the cluster's SEED")
    try:
        schedule: Any = ast.literal_eval(args.schedule)
        steps = [(float(t), str(a), tuple(xs)) for t, a, xs in schedule]
    except (ValueError, SyntaxError, TypeError) as exc:
        raise UsageError(f"--schedule: not a list of (time, action, args): {exc}") from None
    stepper = ScheduleStepper(args.seed, steps)
    lines: list[str] = []
    for view in stepper:
        lines.append(style.paint(str(view), "bold"))
        lines += [f"{'':11}{step_text(r, style)}" for r in view.rows.where(notable)] if args.step else []
    walk(lines, out, ask if args.step else None)
    finished = stepper.run
    for w in [*finished.writes, *finished.reads]:
        print(f"  {w}", file=out)
    for violation in finished.violations:
        print(style.result_line(f"invariants: VIOLATED: {violation}"), file=out)
    if not finished.violations:
        print(style.result_line("invariants: ok"), file=out)
    trace_hash = finished.cluster.trace.hash
    print(style.result_line(f"trace-hash: {trace_hash}"), file=out)
    if args.expect:
        same = args.expect == trace_hash
        print(style.result_line("trace-hash: matches" if same else f"trace-hash: MISMATCH: expected {args.expect}"),
              file=out)
        if not same:
            return 1
    return 1 if finished.violations else 0


COMMANDS: dict[str, Callable[..., int]] = {
    "list": cmd_list, "run": cmd_run, "sweep": cmd_sweep, "replay": cmd_replay, "export": cmd_export,
}


def main(args: argparse.Namespace) -> int:
    """Run `commy sim <command>`: errors in the arguments exit 2 with one clear line, no traceback."""
    command = args.sim_command
    try:
        return COMMANDS[command](args)
    except (UsageError, ValueError) as exc:  # unknown scenario, too few nodes, bad faults, bad --workers
        print(f"commy sim {command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # a sweep's workers are already gone (the pool is terminated on the way out)
        print(f"commy sim {command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader left (`... --trace - | head`): not our error, and no traceback
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit flush cannot fail
        return 141
