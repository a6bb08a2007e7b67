"""Production launch on thespian: `commy launch`, `commy status`, `commy stop`.

Thespian runs and supervises the nodes; it carries nothing but the control messages of
`commy.launch.control` (start, ready, status, stop). All node-to-node data stays on commy's own
authenticated msgpack links, and failure detection stays commy's heartbeats.

- `commy.launch.systems`: starting, finding and shutting down one thespian actor system per host
  (its admin port, its capabilities, its ports bound to the configured address).
- `commy.launch.supervision`: the director's bookkeeping, without thespian: node states, restarts
  with capped backoff, duplicate exit notices, status rows. Unit-tested on its own.
- `commy.launch.director` / `commy.launch.node_actor`: the two thespian actors (thin adapters).
- `commy.launch.node_runtime`: one node's asyncio runtime in a thread of its node actor's process.
- `commy.launch.cli`: the three commands.
"""
