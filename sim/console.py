"""How `commy sim` talks to a terminal: colours when someone is watching, plain text when piped.

`Style.for_stream(stream, mode)` decides once: mode `always` colours, `never` does not, and `auto`
(the default) colours only when the stream is a terminal and `NO_COLOR` is unset or empty
(https://no-color.org). A style also says whether the output is `rich`: on a terminal (or with
`--color always`) the sweep ends with an aligned summary table; otherwise it prints the plain
`key: value` lines that scripts and the tests parse. Colours are ANSI SGR codes and nothing else,
so a plain style returns every string unchanged.

`timeline_line` colours a line of `sim.timeline` by what it says (peer states, faults, clients)
without changing a character of its text; `summary_table` lays a `SweepSummary` out as a table.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, TextIO

from sim.stats import Distribution

if TYPE_CHECKING:
    from sim.sweep import SweepSummary

CODES = {"bold": "1", "dim": "2", "red": "31", "green": "32", "yellow": "33", "blue": "34", "magenta": "35",
         "cyan": "36"}
STATE_STYLE = {"HEALTHY": "green", "SUSPECTED": "yellow", "DOWN": "red", "LEFT": "magenta", "JOINING": "dim"}
FAULT_WORDS = re.compile(r"\b(crashes|restarts|pauses|resumes|partition|one-way partition|bridge partition|heal"
                         r"|loses its disk|breaks|clock skew set to|every link|links)\b")
TIME = re.compile(r"^(\s*\d+\.\d{3}s)(.*)$")
STATE = re.compile(r"\b(sees \S+ )(HEALTHY|SUSPECTED|DOWN|LEFT|JOINING)\b")
CLIENT = re.compile(r"^(\s*)(client \S+|admin \S+)")


@dataclass(frozen=True)
class Style:
    color: bool = False
    rich: bool = False

    @classmethod
    def for_stream(cls, stream: TextIO, mode: str = "auto", env: Mapping[str, str] | None = None) -> Style:
        if mode not in ("auto", "always", "never"):
            raise ValueError(f"--color is auto, always or never, got {mode!r}")
        environ = os.environ if env is None else env
        try:
            tty = stream.isatty()
        except (AttributeError, ValueError):  # a closed or unusual stream is no terminal
            tty = False
        if mode == "always":
            return cls(color=True, rich=True)
        if mode == "never":
            return cls(color=False, rich=tty)
        return cls(color=tty and not environ.get("NO_COLOR"), rich=tty)

    def paint(self, text: str, *styles: str) -> str:
        if not self.color or not styles or not text:
            return text
        return "\x1b[" + ";".join(CODES[s] for s in styles) + "m" + text + "\x1b[0m"

    # ---- what the commands print

    def timeline_line(self, line: str) -> str:
        """A `sim.timeline` line, coloured by what it tells (the text itself is unchanged)."""
        if not self.color:
            return line
        m = TIME.match(line)
        if m is None:
            return self.paint(line, "dim")  # the folded-suspicions note and other asides
        when, rest = m.groups()
        if rest.lstrip().startswith(("start:", "end:", "clients:")):
            return self.paint(when, "dim") + self.paint(rest, "bold")
        painted = STATE.sub(lambda s: s.group(1) + self.paint(s.group(2), "bold", STATE_STYLE[s.group(2)]), rest)
        if painted == rest:  # not a view change ("... DOWN (1.5s after the partition)" names no fault)
            painted = FAULT_WORDS.sub(lambda f: self.paint(f.group(1), "bold", "magenta"), rest, count=1)
        rest = painted
        rest = CLIENT.sub(lambda c: c.group(1) + self.paint(c.group(2), "cyan"), rest)
        return self.paint(when, "dim") + rest

    def result_line(self, line: str) -> str:
        """`invariants: ok` green, a violation red, the hash and replay dim."""
        if not self.color:
            return line
        if line == "invariants: ok" or line.endswith(": matches"):
            return self.paint(line, "green", "bold")
        if line.startswith(("invariants: VIOLATED", "trace-hash: MISMATCH")):
            return self.paint(line, "red", "bold")
        if line.startswith(("trace-hash:", "replay:", "sweep-hash:")):
            return self.paint(line, "dim")
        return line


def _dist_row(label: str, dist: Distribution | None, unit: str, spec: str) -> list[str]:
    if dist is None:
        return [label, "0", "-", "-", "-", "-"]
    return [label, f"{dist.count:,}", *(f"{v:{spec}}{unit}" for v in (dist.p50, dist.p90, dist.p99, dist.max))]


def _grid(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths,
            strict=True))) for r in rows]


def summary_table(summary: SweepSummary, style: Style, faults: str = "") -> list[str]:
    """The sweep, for a person: what ran, a percentile table, violations with their replays."""
    from sim.sweep import MAX_LISTED, format_seeds

    records = summary.records
    ran = f"{len(records)} of {len(summary.seeds)} runs (stopped at the first violation)" if summary.stopped_early \
        else f"{len(records)} runs"
    out = [style.paint(f"sweep {summary.scenario}", "bold") + f"  seeds {format_seeds(summary.seeds)}  {ran}  "
           f"{summary.nodes} nodes x {summary.duration:g} s"]
    if faults:
        out.append(f"faults: {faults}")
    out.append("")
    table = [["", "count", "p50", "p90", "p99", "max"]]
    table.append(_dist_row("detection", Distribution.of(x for r in records for x in r.detection_times), "s", ".3f"))
    table.append(_dist_row("failover", Distribution.of(x for r in records for x in r.failover_times), "s", ".3f"))
    for name in sorted({k for r in records for k in r.metrics}):
        samples = (1000 * x for r in records for x in r.metrics.get(name, ()))  # seconds, shown in ms
        table.append(_dist_row(name, Distribution.of(samples), "ms", ".2f"))
    grid = _grid(table)
    out += [style.paint(grid[0], "bold"), *grid[1:], ""]
    failed = summary.failed
    checkers = summary.by_checker
    false_down = checkers.get("no-false-down", (0, 0))[0]
    verdict = style.paint("none", "green", "bold") if not failed else style.paint(str(len(failed)), "red", "bold")
    out.append(f"  runs with violations  {verdict} of {len(records)}")
    out += [f"    {style.paint(name, 'red')}: {n} in {k} run{'s' * (k != 1)}" for name, (n, k) in checkers.items()]
    out.append(f"  false-down            {style.paint(str(false_down), 'green' if not false_down else 'red')}")
    out.append(f"  delivered             {sum(r.delivered for r in records):,} messages")
    rate = len(records) / summary.wall_time if summary.wall_time > 0 else 0.0
    ratio = summary.simulated / summary.wall_time if summary.wall_time > 0 else 0.0
    out.append(f"  wall time             {summary.wall_time:.2f} s with {summary.workers} worker"
               f"{'s' * (summary.workers != 1)} ({rate:.1f} runs/s, {ratio:,.0f}x simulated/real)")
    out.append(style.paint(f"  sweep-hash            {summary.sweep_hash}", "dim"))
    for r in failed[:MAX_LISTED]:
        out += [f"  {style.paint(f'seed {r.seed}', 'red', 'bold')}: {r.violations[0]}",
                style.paint(f"    replay: {r.replay_command}", "dim")]
    if len(failed) > MAX_LISTED:
        out.append(f"  ... and {len(failed) - MAX_LISTED} more (--json lists them all)")
    return out
