"""Faults given on the command line (`commy sim run ... --loss 0.05 --crash n2@10s`), as one plan.

A `FaultPlan` is what a user adds to a named scenario: link settings for every link (`--latency`,
`--jitter`, `--loss`, `--dup`, `--reorder`), symmetric partitions over a window
(`--partition 5s..15s:n1,n2|n3`: groups split by `|`, nodes not named form one more group; no end
means until the heal-and-quiesce phase), crashes with an optional restart (`--crash n2@10s` or
`n2@10s..12s`), pauses (`--pause n3@4s..7s`), clock offsets (`--skew n3=+200ms`) and the failure
detector's settings (`--detector interval=0.3,suspect=2,down=5`: not a fault, but a replay needs
it all the same). Times read `5s`, `200ms` or a bare number of seconds.

`apply(cluster)` runs before the scenario's own plan (it is given to `run_scenario` as part of its
`on_cluster` hook): link settings and skews take effect at time 0 and are traced as `configure` and
`skew` events; the rest is scheduled on the cluster like any fault, so it is traced, checked and
shown in the timeline. A heal at the end of a window removes every partition, the scenario's too.
The plan and the scenario may act on one node in either order: a crash of a node that is already
crashed, or a restart of one that is running (the other plan restarted it first), does nothing and
is recorded as a `skip` event (`sim.cluster`), so a plan never breaks a run and the run stays
replayable. The detector's settings are set on every node's heartbeat monitor (and on each
restarted incarnation): its first round is still drawn within the default interval.

`args()` prints the plan back as command-line options in one canonical form (seconds as `repr`
floats, so they parse back to the same numbers): that is what replay commands carry. The plan is a
frozen, picklable value, so a sweep can ship it to worker processes.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from commy.core.heartbeat import HEARTBEAT, HeartbeatConfig, HeartbeatMonitor

if TYPE_CHECKING:
    from commy.core.node import Node
    from sim.cluster import SimCluster

LINK_FIELDS = (("latency", "latency"), ("jitter", "jitter"), ("loss", "loss"), ("dup", "duplicate"),
               ("reorder", "reorder"))
"""(option, LinkConfig field) pairs, in the order `args()` prints them."""


def parse_time(text: str, *, signed: bool = False) -> float:
    """`5s`, `200ms`, `1.5` (seconds) -> seconds; `+`/`-` only when `signed`. ValueError otherwise."""
    t = text.strip()
    sign = 1.0
    if signed and t[:1] in "+-" and t:
        sign, t = (-1.0 if t[0] == "-" else 1.0), t[1:]
    scale = 1.0
    if t.endswith("ms"):
        t, scale = t[:-2], 1000.0
    elif t.endswith("s"):
        t = t[:-1]
    try:
        value = float(t)
    except ValueError:
        raise ValueError(f"not a time: {text!r} (say 5s, 200ms or 1.5)") from None
    if not 0.0 <= value < float("inf") or t.strip() != t or t[:1] in "+-":
        raise ValueError(f"not a time: {text!r} (say 5s, 200ms or 1.5)")
    # Dividing the integer-valued text by 1000 rounds once, so `200ms` is exactly float("0.2").
    return sign * value / scale


def format_time(seconds: float, *, signed: bool = False) -> str:
    """Seconds in the form `parse_time` reads back exactly: `5s`, `0.2s`, `+0.2s`."""
    text = repr(abs(seconds) if signed else seconds)
    text = text[:-2] if text.endswith(".0") else text
    if signed:
        text = ("-" if seconds < 0 else "+") + text
    return text + "s"


def _window(text: str, what: str) -> tuple[float, float | None]:
    start_text, sep, end_text = text.partition("..")
    start = parse_time(start_text)
    end = parse_time(end_text) if sep and end_text.strip() else None
    if end is not None and end <= start:
        raise ValueError(f"{what}: the window {text!r} ends before it starts")
    return start, end


def _span(start: float, end: float | None) -> str:
    return format_time(start) + (".." + format_time(end) if end is not None else "")


@dataclass(frozen=True)
class Partition:
    """A symmetric partition from `start` to `end` (None: until the heal-and-quiesce phase)."""

    start: float
    end: float | None
    groups: tuple[tuple[str, ...], ...]

    @classmethod
    def parse(cls, text: str) -> Partition:
        window, sep, spec = text.partition(":")
        if not sep or not spec.strip():
            raise ValueError(f"--partition {text!r}: say START..END:GROUPS, e.g. 5s..15s:n1,n2|n3")
        start, end = _window(window, f"--partition {text!r}")
        groups = tuple(tuple(n.strip() for n in g.split(",")) for g in spec.split("|"))
        if any(not n for g in groups for n in g):
            raise ValueError(f"--partition {text!r}: an empty node name")
        named = [n for g in groups for n in g]
        if len(set(named)) != len(named):
            raise ValueError(f"--partition {text!r}: a node is in two groups")
        return cls(start, end, groups)

    def __str__(self) -> str:
        return _span(self.start, self.end) + ":" + "|".join(",".join(g) for g in self.groups)


@dataclass(frozen=True)
class Outage:
    """A node crashed (or paused) at `at`, restarted (resumed) at `until` if given."""

    node: str
    at: float
    until: float | None = None

    @classmethod
    def parse(cls, text: str, option: str) -> Outage:
        node, sep, window = text.partition("@")
        if not sep or not node.strip():
            raise ValueError(f"{option} {text!r}: say NODE@TIME or NODE@TIME..TIME, e.g. n2@10s")
        at, until = _window(window, f"{option} {text!r}")
        return cls(node.strip(), at, until)

    def __str__(self) -> str:
        return f"{self.node}@{_span(self.at, self.until)}"


def parse_skew(text: str) -> tuple[str, float]:
    node, sep, value = text.partition("=")
    if not sep or not node.strip():
        raise ValueError(f"--skew {text!r}: say NODE=OFFSET, e.g. n3=+200ms")
    return node.strip(), parse_time(value, signed=True)


def parse_detector(text: str) -> HeartbeatConfig:
    """`interval=0.3,suspect=2,down=5` (any subset; the rest keep their defaults)."""
    names = {"interval": "interval", "suspect": "suspect_after", "down": "down_after"}
    values: dict[str, Any] = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or key not in names:
            raise ValueError(f"--detector {text!r}: say interval=0.3,suspect=2,down=5")
        try:
            values[names[key]] = parse_time(value) if key == "interval" else int(value)
        except ValueError:
            raise ValueError(f"--detector {text!r}: bad value for {key}: {value!r}") from None
    try:
        return HeartbeatConfig(**values)
    except ValueError as exc:
        raise ValueError(f"--detector {text!r}: {exc}") from None


def format_detector(cfg: HeartbeatConfig) -> str:
    return f"interval={format_time(cfg.interval)[:-1]},suspect={cfg.suspect_after},down={cfg.down_after}"


@dataclass(frozen=True)
class FaultPlan:
    """Everything the command line adds to a scenario (see the module docstring)."""

    latency: float | None = None
    jitter: float | None = None
    loss: float | None = None
    dup: float | None = None
    reorder: float | None = None
    partitions: tuple[Partition, ...] = ()
    crashes: tuple[Outage, ...] = ()
    pauses: tuple[Outage, ...] = ()
    skews: tuple[tuple[str, float], ...] = ()
    detector: HeartbeatConfig | None = field(default=None)

    @property
    def empty(self) -> bool:
        return all(getattr(self, f.name) in (None, ()) for f in fields(self))

    @classmethod
    def parse(
        cls, *, latency: str | None = None, jitter: str | None = None, loss: float | None = None,
        dup: float | None = None, reorder: float | None = None, partition: Iterable[str] = (),
        crash: Iterable[str] = (), pause: Iterable[str] = (), skew: Iterable[str] = (), detector: str | None = None,
    ) -> FaultPlan:
        """A plan from option texts as argparse collects them; ValueError names the bad option."""
        for name, p in (("--loss", loss), ("--dup", dup), ("--reorder", reorder)):
            if p is not None and not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} is a probability in [0, 1], got {p:g}")
        lat = parse_time(latency) if latency is not None else None
        if lat is not None and lat <= 0:
            raise ValueError("--latency must be above 0")
        return cls(
            latency=lat, jitter=parse_time(jitter) if jitter is not None else None, loss=loss, dup=dup,
            reorder=reorder, partitions=tuple(Partition.parse(p) for p in partition),
            crashes=tuple(Outage.parse(c, "--crash") for c in crash),
            pauses=tuple(Outage.parse(p, "--pause") for p in pause), skews=tuple(parse_skew(s) for s in skew),
            detector=parse_detector(detector) if detector is not None else None,
        )

    def args(self) -> list[str]:
        """The plan as command-line options, canonical (what replay commands carry)."""
        out: list[str] = []
        for option, _ in LINK_FIELDS:
            value = getattr(self, option)
            if value is not None:
                out += [f"--{option}", format_time(value) if option in ("latency", "jitter") else repr(value)]
        out += [x for p in self.partitions for x in ("--partition", str(p))]
        out += [x for c in self.crashes for x in ("--crash", str(c))]
        out += [x for p in self.pauses for x in ("--pause", str(p))]
        out += [x for n, s in self.skews for x in ("--skew", f"{n}={format_time(s, signed=True)}")]
        if self.detector is not None:
            out += ["--detector", format_detector(self.detector)]
        return out

    def command_text(self) -> str:
        """`args()` quoted for a POSIX shell (a partition's `|` would be a pipe)."""
        return " ".join(shlex.quote(a) for a in self.args())

    def validate(self, node_ids: Sequence[str], fault_window: float) -> None:
        """ValueError unless every node exists and every fault starts before `fault_window` s."""
        known = set(node_ids)
        named = [n for p in self.partitions for g in p.groups for n in g]
        named += [o.node for o in (*self.crashes, *self.pauses)] + [n for n, _ in self.skews]
        unknown = sorted(set(named) - known)
        if unknown:
            raise ValueError(f"unknown node{'s' * (len(unknown) > 1)} {', '.join(unknown)} in the fault options; "
                             f"this run has {node_ids[0]}..{node_ids[-1]}")
        for what, at in ([("--partition", p.start) for p in self.partitions]
                         + [("--crash", o.at) for o in self.crashes] + [("--pause", o.at) for o in self.pauses]):
            if at >= fault_window:
                raise ValueError(f"{what} at {format_time(at)}: faults must start before the heal-and-quiesce "
                                 f"phase, at {format_time(fault_window)} in this run")
        for p in self.partitions:
            if len(p.groups) == 1 and set(p.groups[0]) == known:
                raise ValueError(f"--partition {p}: one group holding every node cuts nothing")

    def apply(self, cluster: SimCluster) -> None:
        """Put the plan on a cluster that has not started running (see the module docstring)."""
        changes = {name: getattr(self, option) for option, name in LINK_FIELDS if getattr(self, option) is not None}
        if changes:
            cluster.configure(**changes)
        for node, seconds in self.skews:
            cluster.set_skew(node, seconds)
        for p in self.partitions:
            cluster.schedule(p.start, "partition", *p.groups)
            if p.end is not None:
                cluster.schedule(p.end, "heal")
        for o in self.crashes:
            cluster.schedule(o.at, "crash", o.node)
            if o.until is not None:
                cluster.schedule(o.until, "restart", o.node)  # a no-op, traced, if it is running by then
        for o in self.pauses:
            cluster.schedule(o.at, "pause", o.node)
            if o.until is not None:
                cluster.schedule(o.until, "resume", o.node)
        if self.detector is not None:
            tune_detector(cluster, self.detector)


def tune_detector(cluster: SimCluster, config: HeartbeatConfig) -> None:
    """Give every heartbeat monitor of the cluster (and of every later incarnation) `config`."""

    def tune(node: Node) -> None:
        monitor = node.actors.get(HEARTBEAT)
        if isinstance(monitor, HeartbeatMonitor):
            monitor.config = config

    for n in cluster.node_ids:
        if cluster.alive(n):
            tune(cluster.node(n))
    build = cluster.build

    def rebuild(node: Node) -> None:
        if build is not None:
            build(node)
        tune(node)

    cluster.build = rebuild


LIST_OPTIONS = ("partition", "crash", "pause", "skew")
FLOAT_OPTIONS = ("loss", "dup", "reorder")
TEXT_OPTIONS = ("latency", "jitter", "detector")


def parse_fault_args(args: Sequence[str]) -> FaultPlan:
    """A plan from `--option value` pairs, as `FaultPlan.args()` prints them (trace headers keep them)."""
    lists: dict[str, list[str]] = {k: [] for k in LIST_OPTIONS}
    scalars: dict[str, Any] = {}
    items = iter(args)
    for option in items:
        value = next(items, None)
        key = option[2:] if option.startswith("--") else ""
        if value is None or key not in (*LIST_OPTIONS, *FLOAT_OPTIONS, *TEXT_OPTIONS):
            raise ValueError(f"not a fault option with its value: {option!r}")
        if key in lists:
            lists[key].append(value)
        elif key in FLOAT_OPTIONS:
            try:
                scalars[key] = float(value)
            except ValueError:
                raise ValueError(f"--{key}: not a number: {value!r}") from None
        else:
            scalars[key] = value
    return FaultPlan.parse(**scalars, partition=lists["partition"], crash=lists["crash"], pause=lists["pause"],
                           skew=lists["skew"])
