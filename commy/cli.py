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


def _cmd_sim_list(args: argparse.Namespace) -> int:
    from sim.scenarios import list_scenarios

    for name, description in list_scenarios():
        print(f"{name:24} {description}")
    return 0


def _cmd_sim_run(args: argparse.Namespace) -> int:
    from sim.scenarios import run_scenario
    from sim.sweep import lines_for_run, record_of

    try:
        result = run_scenario(args.scenario, seed=args.seed, nodes=args.nodes, duration=args.duration)
    except ValueError as exc:  # unknown scenario, too few nodes, too short a run
        print(f"commy sim run: error: {exc}", file=sys.stderr)
        return 2
    for line in result.timeline:
        print(line)
    for line in lines_for_run(record_of(args.seed, result)):  # detection percentiles, false-DOWN count
        print(line)
    print(f"delivered: {result.delivered} messages in {result.duration:g} simulated s")
    if result.violations:
        for violation in result.violations:
            print(f"invariants: VIOLATED: {violation}")
        print(f"replay: {result.replay_command}")
    else:
        print("invariants: ok")
    print(f"trace-hash: {result.trace_hash}")
    return 1 if result.violations else 0


def _cmd_sim_sweep(args: argparse.Namespace) -> int:
    import json

    from sim.progress import Progress
    from sim.sweep import parse_seeds, sweep

    try:
        seeds = parse_seeds(args.seeds)
    except ValueError as exc:
        print(f"commy sim sweep: error: --seeds: {exc}", file=sys.stderr)
        return 2
    bar = Progress(len(seeds), sys.stderr, label=f"sweep {args.scenario}")
    try:
        try:
            summary = sweep(args.scenario, seeds, workers=args.workers, nodes=args.nodes, duration=args.duration,
                            fail_fast=args.fail_fast, progress=bar.update)
        finally:
            bar.close()  # end the bar's line before any message
    except ValueError as exc:  # unknown scenario, too few nodes, too short a run, bad --workers
        print(f"commy sim sweep: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # the workers are already gone (the pool is terminated on the way out)
        print("commy sim sweep: interrupted", file=sys.stderr)
        return 130
    for line in summary.lines():
        print(line)
    if args.json:
        try:
            with open(args.json, "w", encoding="utf-8") as f:
                json.dump(summary.as_json(), f, indent=2)
        except OSError as exc:
            print(f"commy sim sweep: error: --json: {exc}", file=sys.stderr)
            return 2
    return 1 if summary.failed else 0


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

    sim = sub.add_parser("sim", help="deterministic cluster simulations")
    sim_sub = sim.add_subparsers(dest="sim_command", required=True)
    sim_sub.add_parser("list", help="list the scenarios").set_defaults(func=_cmd_sim_list)
    run = sim_sub.add_parser("run", help="run one scenario")
    run.add_argument("scenario")
    run.add_argument("--seed", type=int, default=1)
    run.add_argument("--nodes", type=int, default=None, help="cluster size (scenario default if omitted)")
    run.add_argument("--duration", type=float, default=None, help="simulated seconds (scenario default)")
    run.set_defaults(func=_cmd_sim_run)
    swp = sim_sub.add_parser("sweep", help="run one scenario over many seeds and summarise")
    swp.add_argument("scenario")
    swp.add_argument("--seeds", default="1..200", help="a range 1..200 (inclusive), a list 1,5,9, or both")
    swp.add_argument("--workers", type=int, default=1, help="worker processes (0: one per CPU)")
    swp.add_argument("--nodes", type=int, default=None, help="cluster size (scenario default if omitted)")
    swp.add_argument("--duration", type=float, default=None, help="simulated seconds (scenario default)")
    swp.add_argument("--fail-fast", action="store_true", help="stop at the first run with a violation")
    swp.add_argument("--json", metavar="PATH", default=None, help="also write the summary as JSON")
    swp.set_defaults(func=_cmd_sim_sweep)

    bench = sub.add_parser("bench", help="measure against the raw ceilings (DESIGN §9)")
    bench.add_argument("--quick", action="store_true", help="fewer, shorter runs")
    bench.add_argument("--json", metavar="PATH", default=None, help="also write the rows as JSON")
    bench.add_argument("--only", action="append", default=None, help="run only rows whose name contains this")
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
