"""Gateway pieces that need no socket: frame building, loopback detection, configuration checks."""

from __future__ import annotations

import pytest
from websockets.frames import Frame, Opcode

from commy.runtime.gateway import GatewayConfig, is_loopback
from commy.runtime.gateway_conn import frame


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70000])
@pytest.mark.parametrize("text", [False, True])
def test_frames_are_what_websockets_would_send(size: int, text: bool) -> None:
    payload = bytes(i % 251 for i in range(size))
    expected = Frame(Opcode.TEXT if text else Opcode.BINARY, payload).serialize(mask=False)
    assert frame(payload, text) == expected


@pytest.mark.parametrize(("host", "local"), [
    ("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("::ffff:127.0.0.1", True),
    ("10.0.0.1", False), ("192.168.1.2", False), ("::ffff:10.0.0.1", False), ("2001:db8::1", False),
    ("", False), ("localhost", False), ("fe80::1%lo", False),
])
def test_loopback_peers_are_local(host: str, local: bool) -> None:
    assert is_loopback(host) is local


@pytest.mark.parametrize("bad", [
    {"max_frame": 0}, {"max_bad_frames": 0}, {"max_queue": -1}, {"max_queue_bytes": 0},
    {"max_connections": 0}, {"write_limit": 0}, {"stall_timeout": 0.0}, {"stall_timeout": float("inf")},
    {"close_timeout": -1.0}, {"open_timeout": float("nan")}, {"compression": "gzip"}, {"max_frame": 1.5},
])
def test_bad_gateway_settings_are_refused_by_name(bad: dict[str, object]) -> None:
    (name,) = bad
    with pytest.raises(ValueError, match=f"gateway.{name}"):
        GatewayConfig(**bad)  # type: ignore[arg-type]


def test_default_gateway_settings() -> None:
    c = GatewayConfig()
    assert (c.max_frame, c.compression, c.max_bad_frames, c.stall_timeout) == (1 << 20, None, 16, 30.0)
    assert (c.max_queue, c.max_queue_bytes, c.max_connections) == (10_000, 16 << 20, 10_000)
