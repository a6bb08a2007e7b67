"""Deterministic simulation of commy clusters: virtual time, a simulated network, faults, traces.

`sim` imports `commy` and never the reverse (except `commy.cli` and `commy.bench`, lazily). The
entry points are `sim.cluster.SimCluster` (build and drive a cluster by hand) and
`sim.scenarios.run_scenario` (the named scenarios behind `commy sim run`).
"""
