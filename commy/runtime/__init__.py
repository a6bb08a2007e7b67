"""Real-world drivers of a node: the asyncio host, the TCP peer transport, the standalone node.

`commy.core` stays sans-IO; everything here owns sockets, the event loop and the wall clock.
"""
