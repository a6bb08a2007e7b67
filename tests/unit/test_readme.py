"""The README documents every wire message with its tag, and the commands it promises exist."""

from __future__ import annotations

import re
from pathlib import Path

from commy.cli import build_parser
from commy.messages import REGISTRY, WIRE

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")


def test_every_wire_message_is_documented_with_its_tag() -> None:
    for tag, cls in REGISTRY.items():
        if cls.SCOPE == WIRE:
            assert re.search(rf"\| {tag} \| `{cls.__name__}` \|", README), f"README lacks {cls.__name__} (tag {tag})"


def test_readme_opens_with_the_two_commands() -> None:
    assert "pip install -e '.[dev]' && commy serve" in README
    assert "\npytest" in README


def test_readme_has_no_unfilled_placeholders() -> None:
    for marker in ("SIM_OUTPUT", "SIM_LIST", "BENCH_TABLE", "TODO"):
        assert marker not in README


def test_commands_in_readme_parse() -> None:
    parser = build_parser()
    blocks = "\n".join(re.findall(r"```(?:sh|console)\n(.*?)```", README, flags=re.S))
    lines = re.findall(r"^(?:\$ )?(commy [^&#\n]+)", blocks, flags=re.M)
    assert lines, "the README shows no commy command"
    for line in lines:
        args = line.split()[1:]
        parser.parse_args(args)


def test_readme_shows_the_current_trace_hash_of_its_example() -> None:
    from sim.scenarios import run_scenario

    shown = re.search(r"trace-hash: ([0-9a-f]{64})", README)
    assert shown, "the README shows no trace hash"
    assert shown.group(1) == run_scenario("heartbeat-crash", seed=7).trace_hash, "re-run the README's example"


def test_readme_shows_the_current_output_of_its_failover_example() -> None:
    from sim.scenarios import run_scenario

    block = re.search(r"^\$ commy sim run failover --seed 3\n(.*?)^```", README, flags=re.M | re.S)
    assert block, "the README shows no `commy sim run failover --seed 3` sample"
    shown = re.search(r"^trace-hash: ([0-9a-f]{64})$", block.group(1), flags=re.M)
    result = run_scenario("failover", seed=3)
    assert shown and shown.group(1) == result.trace_hash, "re-run the README's failover example"
    assert f"\ndelivered: {result.delivered} messages in 14 simulated s\n" in block.group(1)
    assert "\nmetric replication_lag: " in block.group(1) and "\nmetric write_latency: " in block.group(1)


def test_the_client_table_says_what_each_request_is_answered_with() -> None:
    from commy.messages.client import REPLY_TO, UNANSWERED

    for request, reply in REPLY_TO.items():
        assert re.search(rf"\| {request.TAG} \| `{request.__name__}` \|[^\n]*\| client \| `{reply.__name__}` \|",
                         README), f"README: {request.__name__} is answered with {reply.__name__}"
    for ack in UNANSWERED:
        assert re.search(rf"\| `{ack.__name__}` \|[^\n]*\| client \| \(none: an acknowledgement\) \|", README), ack
