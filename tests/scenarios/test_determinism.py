"""Every scenario, run twice per seed, produces the same trace hash; different seeds differ.

One run also goes through a fresh interpreter with a different PYTHONHASHSEED: set iteration
order (string hashes) must never leak into what the simulator does.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sim.scenarios import list_scenarios, run_scenario

SEEDS = (1, 2, 3, 4)
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", [name for name, _ in list_scenarios()])
def test_same_seed_same_hash_and_seeds_differ(name: str) -> None:
    hashes = {}
    for seed in SEEDS:
        first = run_scenario(name, seed=seed)
        second = run_scenario(name, seed=seed)
        assert first.trace_hash == second.trace_hash, f"nondeterministic: replay with `{first.replay_command}`"
        assert first.timeline == second.timeline and first.delivered == second.delivered
        hashes[seed] = first.trace_hash
    assert len(set(hashes.values())) == len(SEEDS), f"{name}: different seeds gave the same trace {hashes}"


def test_hash_does_not_depend_on_the_interpreter_hash_seed() -> None:
    expected = run_scenario("heartbeat-chaos", seed=3, duration=12.0).trace_hash
    code = ("from sim.scenarios import run_scenario; "
            "print(run_scenario('heartbeat-chaos', seed=3, duration=12).trace_hash)")
    for hash_seed in ("0", "4242"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                             check=True, timeout=120)
        assert out.stdout.strip() == expected, f"PYTHONHASHSEED={hash_seed} changed the trace"


def test_size_and_duration_change_the_run() -> None:
    base = run_scenario("heartbeat-crash", seed=1)
    assert run_scenario("heartbeat-crash", seed=1, nodes=4).trace_hash != base.trace_hash
    assert run_scenario("heartbeat-crash", seed=1, duration=11.0).trace_hash != base.trace_hash
