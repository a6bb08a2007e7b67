"""The `commy` command.

Subcommands parse their arguments here and call one function each; no protocol logic lives here.
`commy serve`, `commy certs` and `commy admin` bring their own parsers (`commy.runtime.serve`,
`commy.client.admin_cli`). `commy sim ...` and the simulator row of `commy bench` import the `sim`
package lazily: the only place the product reaches into the simulator, and only when asked to.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _cmd_sim(args: argparse.Namespace) -> int:
    from sim.commands import main as sim_main

    return sim_main(args)


def _add_sim_run_options(p: argparse.ArgumentParser, *, seed: bool = True) -> None:
    """Scenario size and duration, the fault options (`sim.faults`) and --color, for run/sweep/replay/export."""
    if seed:
        p.add_argument("--seed", type=int, default=1)
    p.add_argument("--nodes", type=int, default=None, help="cluster size (scenario default if omitted)")
    p.add_argument("--duration", type=float, default=None, help="simulated seconds (scenario default)")
    faults = p.add_argument_group("faults (added to the scenario's own; a replay needs the same ones)")
    faults.add_argument("--latency", metavar="TIME", help="one-way latency of every link, e.g. 5ms")
    faults.add_argument("--jitter", metavar="TIME", help="latency varies by up to this much, e.g. 2ms")
    faults.add_argument("--loss", type=float, metavar="P", help="chance a message is lost, e.g. 0.05")
    faults.add_argument("--dup", type=float, metavar="P", help="chance a message is delivered twice")
    faults.add_argument("--reorder", type=float, metavar="P", help="chance a message overtakes earlier ones")
    faults.add_argument("--partition", action="append", metavar="START..END:GROUPS",
                        help="cut the cluster, e.g. '5s..15s:n1,n2|n3' (no END: until the quiesce; repeatable)")
    faults.add_argument("--crash", action="append", metavar="NODE@TIME[..TIME]",
                        help="crash a node, e.g. n2@10s, or n2@10s..12s to restart it (repeatable)")
    faults.add_argument("--pause", action="append", metavar="NODE@TIME[..TIME]",
                        help="freeze a node, e.g. n3@4s..7s (repeatable)")
    faults.add_argument("--skew", action="append", metavar="NODE=OFFSET", help="clock offset, e.g. n3=+200ms")
    faults.add_argument("--detector", metavar="SETTINGS",
                        help="failure detector settings, e.g. interval=0.3,suspect=2,down=5")
    p.add_argument("--color", choices=("auto", "always", "never"), default="auto",
                   help="colour the output (auto: on a terminal, unless NO_COLOR is set)")


def _add_sim_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sim = sub.add_parser("sim", help="deterministic cluster simulations")
    sim_sub = sim.add_subparsers(dest="sim_command", required=True)
    lst = sim_sub.add_parser("list", help="list the scenarios")
    lst.add_argument("--color", choices=("auto", "always", "never"), default="auto")
    run = sim_sub.add_parser("run", help="run one scenario")
    run.add_argument("scenario")
    _add_sim_run_options(run)
    swp = sim_sub.add_parser("sweep", help="run one scenario over many seeds and summarise")
    swp.add_argument("scenario")
    swp.add_argument("--seeds", default="1..200", help="a range 1..200 (inclusive), a list 1,5,9, or both")
    swp.add_argument("--workers", type=int, default=1, help="worker processes (0: one per CPU)")
    swp.add_argument("--fail-fast", action="store_true", help="stop at the first run with a violation")
    swp.add_argument("--json", metavar="PATH", default=None, help="also write the summary as JSON")
    swp.add_argument("--table", action="store_true", help="the summary as a table even when piped")
    _add_sim_run_options(swp, seed=False)
    rep = sim_sub.add_parser("replay", help="run a seed again and check its trace hash; step through it")
    rep.add_argument("seed", type=int, nargs="?", default=None)
    rep.add_argument("--scenario", default=None, help="the scenario (not needed with --from or --schedule)")
    rep.add_argument("--from", dest="source", metavar="TRACE.jsonl", help="replay the run a trace file records")
    rep.add_argument("--schedule", metavar="STEPS", help="a sim.schedule schedule: '[(t, action, args), ...]'")
    rep.add_argument("--expect", metavar="HASH", help="the trace hash the run must reproduce (exit 1 if not)")
    rep.add_argument("--step", action="store_true", help="step through the notable rows (Enter, c, q)")
    rep.add_argument("--all", action="store_true", help="with --step: every row, not just the notable ones")
    rep.add_argument("--window", metavar="START..END", help="with --step: only rows in this time window")
    _add_sim_run_options(rep, seed=False)
    exp = sim_sub.add_parser("export", help="run a scenario and write its trace as JSON lines")
    exp.add_argument("scenario")
    exp.add_argument("--trace", required=True, metavar="PATH", help="where to write (- for stdout)")
    exp.add_argument("--events", metavar="NAMES", help="only these events, comma-separated (e.g. crash,log:peer_state)")
    _add_sim_run_options(exp)
    sim.set_defaults(func=_cmd_sim)


def _cmd_bench(args: argparse.Namespace) -> int:
    from commy.bench import main as bench_main

    return bench_main(quick=args.quick, json_path=args.json, only=args.only)


def _cmd_node(args: argparse.Namespace) -> int:
    from commy.runtime.standalone import run_node_cli

    return run_node_cli(args)


def _cmd_config_check(args: argparse.Namespace) -> int:
    from commy.config import ConfigError, describe, load_cluster_config

    try:
        config = load_cluster_config(args.file)
    except ConfigError as exc:
        print(f"commy config check: {exc}", file=sys.stderr)
        return 1
    print(describe(config))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from commy.demo import run_demo_cli

    return run_demo_cli(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="commy",
        description="commy: hierarchical, multi-tenant shared-memory coordination (servers, clients, simulator)")
    sub = parser.add_subparsers(dest="command", required=True)

    _add_sim_parsers(sub)

    bench = sub.add_parser("bench", help="measure against the raw ceilings (DESIGN §9)")
    bench.add_argument("--quick", action="store_true", help="fewer, shorter runs")
    bench.add_argument("--json", metavar="PATH", default=None, help="also write the rows as JSON")
    bench.add_argument("--only", action="append", default=None, metavar="KEY",
                       help="run only a group of rows (repeatable): codec, transport, simulator, local, websocket, "
                            "cluster-lag, cluster-kill, cluster-sim (a part of a key matches)")
    bench.set_defaults(func=_cmd_bench)

    node = sub.add_parser("node", help="run one node (TCP peer transport and heartbeat monitor)")
    node.add_argument("--id", required=True, help="this node's id")
    node.add_argument("--listen", required=True, help="HOST:PORT for the peer transport")
    node.add_argument("--peer", action="append", default=[], metavar="ID=HOST:PORT", help="a peer (repeatable)")
    node.add_argument("--interval", type=float, default=None, help="heartbeat interval, seconds")
    node.add_argument("--suspect-after", type=int, default=None)
    node.add_argument("--down-after", type=int, default=None)
    node.add_argument("--seed", type=int, default=None, help="seed the node's random stream (default: random)")
    node.add_argument("--secret-file", default=None, metavar="PATH",
                      help="file holding the cluster secret (else env COMMY_CLUSTER_SECRET; required)")
    node.set_defaults(func=_cmd_node)

    config = sub.add_parser("config", help="cluster configuration files")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    check = config_sub.add_parser("check", help="validate a cluster configuration and summarise it")
    check.add_argument("file")
    check.set_defaults(func=_cmd_config_check)

    demo = sub.add_parser("demo", help="a local 3-node cluster: kill one node, watch the failover")
    demo.add_argument("--nodes", type=int, default=3, help="how many nodes (3 to 9; default 3)")
    demo.add_argument("--dir", default=None, help="folder for config, secret, data and logs (new or empty; kept)")
    demo.add_argument("--keep", action="store_true", help="keep the temporary folder at the end")
    demo.set_defaults(func=_cmd_demo)

    from commy.client.admin_cli import add_admin_parser
    from commy.launch.cli import add_launch_parsers
    from commy.runtime.serve import add_certs_parser, add_serve_parser

    add_serve_parser(sub)
    add_admin_parser(sub)
    add_certs_parser(sub)
    add_launch_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
