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
  Enter when stdin is a terminal; `--all` shows every row, `--window 4..7` a time window); only
  then are the rows kept. A schedule runs on its own 3-node cluster: `--scenario`, `--from`,
  `--nodes`, `--duration` and fault options do not apply to it and are refused.
- `export` runs a scenario and writes its trace as JSON lines (`sim.trace_export`; `-` is stdout),
  to a temporary file beside the target that replaces it only once the run is over.

Arguments are checked before anything runs, and a bad one is a `UsageError`: one `error:` line,
exit status 2. Anything else raised during a run is a bug: `main` prints its traceback and the
command that repeats the run (with its seed), and exits 1.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import json
import os
import shlex
import sys
import tempfile
import traceback
from collections.abc import Callable
from typing import Any, TextIO, TypeVar

from sim.console import Style, summary_table
from sim.faults import FaultPlan, parse_time
from sim.replay import Recording, ScheduleStepper, check_faults, record, run, run_command
from sim.scenarios import ScenarioResult, resolve
from sim.stepper import notable, step_text, walk
from sim.sweep import lines_for_run, parse_seeds, record_of

Ask = Callable[[str], str]
T = TypeVar("T")


class UsageError(Exception):
    """A bad argument, found before anything runs: the command prints it and exits 2."""


def plan_of(args: argparse.Namespace) -> FaultPlan | None:
    """The fault options as a plan (None if there are none); UsageError names a bad one."""
    try:
        plan = FaultPlan.parse(
            latency=args.latency, jitter=args.jitter, loss=args.loss, dup=args.dup, reorder=args.reorder,
            partition=args.partition or (), crash=args.crash or (), pause=args.pause or (), skew=args.skew or (),
            detector=args.detector)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return None if plan.empty else plan


def checked(name: str, nodes: int | None, duration: float | None, faults: FaultPlan | None) -> FaultPlan | None:
    """`faults`, once the scenario, its size and duration and the faults are known to fit (else UsageError)."""
    try:
        check_faults(name, nodes, duration, faults)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return faults


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
    faults = checked(args.scenario, args.nodes, args.duration, plan_of(args))
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
    if args.workers < 0:
        raise UsageError(f"--workers must be 0 (one per CPU) or more, got {args.workers}")
    faults = checked(args.scenario, args.nodes, args.duration, plan_of(args))
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

    faults = checked(args.scenario, args.nodes, args.duration, plan_of(args))
    events = [e for e in args.events.split(",") if e] if args.events else None
    to_stdout = args.trace == "-"

    def export(stream: TextIO) -> tuple[ScenarioResult, int]:
        return export_run(stream, args.scenario, seed=args.seed, nodes=args.nodes, duration=args.duration,
                          faults=faults, events=events)

    result, rows = export(out) if to_stdout else write_replacing(args.trace, export, "--trace")
    said = err if to_stdout else out  # keep stdout pure JSON lines when the trace goes there
    print(f"wrote {rows} rows ({result.events} events) to {'stdout' if to_stdout else args.trace}", file=said)
    print(f"invariants: {'ok' if result.ok else f'{len(result.violations)} violated'}", file=said)
    print(f"trace-hash: {result.trace_hash}", file=said)
    return 1 if result.violations else 0


def write_replacing(path: str, write: Callable[[TextIO], T], option: str) -> T:
    """`write` into a new file beside `path`, renamed over it only when `write` returns: a failed or
    interrupted run leaves `path` as it was. A folder that cannot take the file is a UsageError."""
    if os.path.isdir(path):
        raise UsageError(f"{option}: {path} is a folder")
    folder = os.path.dirname(os.path.abspath(path))
    try:
        fd, temp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    except OSError as exc:
        raise UsageError(f"{option}: cannot write in {folder}: {exc.strerror or exc}") from None
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temp, 0o666 & ~umask)  # what open() would have made, not mkstemp's 0600
        with open(fd, "w", encoding="utf-8") as stream:
            value = write(stream)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    return value


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


def _check_replay_options(args: argparse.Namespace) -> None:
    """UsageError for options that would be ignored: stepping options without --step, and with a
    schedule anything that sets up a scenario run."""
    if (args.all or args.window) and not args.step:
        raise UsageError("--all and --window go with --step")
    if args.schedule is None:
        return
    given = [option for option, value in (("--scenario", args.scenario), ("--from", args.source),
                                          ("--nodes", args.nodes), ("--duration", args.duration)) if value is not None]
    if plan_of(args) is not None:
        given.append("fault options")
    if given:
        raise UsageError(f"--schedule runs its own 3-node cluster: {', '.join(given)} do not apply to it")


def cmd_replay(args: argparse.Namespace, out: TextIO | None = None, ask: Ask | None = None) -> int:
    out = out or sys.stdout
    style = _style(args, out)
    _check_replay_options(args)
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
            h = saved.header
            name, seed, nodes, duration = str(h["scenario"]), int(h["seed"]), int(h["nodes"]), float(h["duration"])
            faults = header_plan(h)
        except (OSError, ValueError, TypeError) as exc:
            raise UsageError(f"--from: {exc}") from None
        expect = expect or saved.trace_hash
    elif name is None or seed is None:
        raise UsageError("say what to replay: SEED --scenario NAME, --from TRACE.jsonl, or SEED --schedule '[...]'")
    faults = checked(name, nodes, duration, faults)
    window = _window(args.window)
    if args.step:  # only then is every row worth keeping
        rec = record(name, seed=seed, nodes=nodes, duration=duration, faults=faults)
        _step(rec, window, args.all, style, out, _asker(ask))
        result = rec.result
    else:
        result = run(name, seed=seed, nodes=nodes, duration=duration, faults=faults)
    _report(result, faults, style, out)
    if expect:
        same = expect == result.trace_hash
        line = "trace-hash: matches" if same else f"trace-hash: MISMATCH: expected {expect}"
        print(style.result_line(line), file=out)
        if not same:
            return 1
    return 1 if result.violations else 0


def _step(rec: Recording, window: tuple[float, float], every: bool, style: Style, out: TextIO,
          ask: Ask | None) -> None:
    rows = rec.trace.between(*window)
    shown = rows if every else rows.where(notable)
    print(style.paint(f"stepping through {len(shown)} of {len(rec.trace)} rows "
                      f"({'all' if every else 'notable'}; Enter: next, c: continue, q: stop)", "bold"), file=out)
    walk([step_text(r, style) for r in shown], out, ask)


def parse_schedule(text: str) -> list[tuple[float, str, tuple[Any, ...]]]:
    """`[(t, action, args), ...]` as Python literals; UsageError if it is not that."""
    try:
        schedule: Any = ast.literal_eval(text)
        steps = [(float(t), a, tuple(xs)) for t, a, xs in schedule]
        if not all(isinstance(a, str) for _, a, _ in steps) or not all(isinstance(xs, list | tuple)
                                                                      for _, _, xs in schedule):
            raise ValueError("an action is a name and its arguments a tuple")
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as exc:
        raise UsageError(f"--schedule: not a list of (time, action, args): {exc}") from None
    return steps


def _replay_schedule(args: argparse.Namespace, style: Style, out: TextIO, ask: Ask | None) -> int:
    if args.seed is None:
        raise UsageError("--schedule needs the cluster's SEED")
    steps = parse_schedule(args.schedule)
    window = _window(args.window)
    try:
        stepper = ScheduleStepper(args.seed, steps)
    except ValueError as exc:  # a step the cluster cannot take, named (`sim.replay.check_schedule`)
        raise UsageError(f"--schedule: {exc}") from None
    lines: list[str] = []
    for view in stepper:
        lines.append(style.paint(str(view), "bold"))
        if args.step:
            rows = view.rows.between(*window)
            lines += [f"{'':11}{step_text(r, style)}" for r in (rows if args.all else rows.where(notable))]
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


def again(args: argparse.Namespace) -> str:
    """` (seed S); again with: COMMAND` for the one run a command made, or "" (a sweep: it names its own)."""
    with contextlib.suppress(Exception):  # this explains a failure: it must not fail itself
        seed = getattr(args, "seed", None)
        if getattr(args, "source", None):
            return f"; again with: commy sim replay --from {shlex.quote(args.source)}"
        if seed is not None and getattr(args, "schedule", None) is not None:
            return f" (seed {seed}); again with: commy sim replay {seed} --schedule {shlex.quote(args.schedule)}"
        if seed is not None and getattr(args, "scenario", None) is not None:
            _, n, d = resolve(args.scenario, args.nodes, args.duration)
            return f" (seed {seed}); again with: {run_command(args.scenario, seed, n, d, plan_of(args))}"
    return ""


def main(args: argparse.Namespace) -> int:
    """Run `commy sim <command>`: a bad argument exits 2 with one clear line, no traceback; anything
    else that goes wrong is a bug, shown with its traceback and the run that repeats it (exit 1)."""
    command = args.sim_command
    try:
        return COMMANDS[command](args)
    except UsageError as exc:  # unknown scenario, too few nodes, bad faults, bad --workers, bad schedule
        print(f"commy sim {command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # a sweep's workers are already gone (the pool is terminated on the way out)
        print(f"commy sim {command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader left (`... --trace - | head`): not our error, and no traceback
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit flush cannot fail
        return 141
    except Exception:
        traceback.print_exc()
        print(f"commy sim {command}: the run failed with an exception, a bug in commy or the simulator"
              f"{again(args)}", file=sys.stderr)
        return 1
