"""/metrics: a real server's scrape parses with `prometheus_client.parser` and shows every family of
`METRICS`; the counters it reads (gateway, peer codec, heartbeat round trips) count what they should.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect as ws_connect

from commy.client import AsyncClient, ForbiddenError
from commy.core.heartbeat import HEARTBEAT, RTT_BUCKETS, HeartbeatConfig, HeartbeatMonitor, RttHistogram
from commy.core.hlc import MILLIS_SHIFT
from commy.messages import (
    Address,
    Envelope,
    Error,
    HeartbeatPong,
    HeartbeatTick,
    Replicate,
    ServerStatus,
    WriteRecord,
)
from commy.runtime.gateway import GatewayConfig, GatewayStats
from commy.runtime.loop import run
from commy.runtime.metrics import CONTENT_TYPE, METRICS
from commy.runtime.server import start_server
from commy.runtime.wire_meter import FRAME_HEADER, LAG_WINDOW, MAX_SERVICES, LagWindow, MeteredCodec
from tests.helpers.aio import until
from tests.helpers.fake_context import FakeContext, deliver
from tests.unit.test_http_endpoints import fetch, port_of

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> tuple[set[str], Samples]:
    """(family names as exposed, {(sample name, sorted labels): value}) of one scrape."""
    families, samples = set(), {}
    for family in text_string_to_metric_families(text):
        # The parser names a counter family without its `_total`; the exposed samples keep it.
        families.add(family.name + "_total" if family.type == "counter" else family.name)
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return families, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def test_a_scrape_parses_and_counts_what_the_clients_did(tmp_path: Path) -> None:
    async def main() -> tuple[str, str, str]:
        srv = await start_server(tmp_path / "data", ("127.0.0.1", 0))
        try:
            assert srv.bootstrap_key is not None
            async with AsyncClient.connect(srv.url) as admin:
                await admin.authenticate("", api_key=srv.bootstrap_key)
                await admin.create_tenant("acme")
                await admin.create_service("acme", "sensors")
                _, key = await admin.create_api_key("alice", tenant="acme", scopes=["write"])
                async with AsyncClient.connect(srv.url) as alice:
                    await alice.authenticate("acme", api_key=key)
                    for i in range(5):
                        await alice.service("acme", "sensors", local=False).set("t", str(i).encode())
                    with pytest.raises(ForbiddenError):
                        await alice.create_tenant("other")  # alice is no server admin: one `forbidden`
                    status, headers, body = await fetch(port_of(srv), "/metrics")
                    assert status == 200
                    return headers["content-type"], body.decode(), srv.node.node_id
        finally:
            await srv.close()

    content_type, text, node = run(main())
    assert content_type == CONTENT_TYPE
    families, samples = parse(text)
    assert families == set(METRICS)
    assert value(samples, "commy_node_info", node=node, version=__import__("commy").__version__) == 1
    assert value(samples, "commy_node_state", state="serving") == 1
    assert value(samples, "commy_node_state", state="draining") == 0
    assert value(samples, "commy_clients_connected") == 2
    assert value(samples, "commy_sessions", tenant="acme") >= 1
    assert value(samples, "commy_tenants") == 1 and value(samples, "commy_services_held") == 1
    assert value(samples, "commy_messages_received_total", protocol="client") >= 10
    assert value(samples, "commy_messages_sent_total", protocol="client") >= 10
    assert value(samples, "commy_bytes_received_total", protocol="client") > 100
    assert value(samples, "commy_bytes_sent_total", protocol="client") > 100
    assert value(samples, "commy_errors_sent_total", protocol="client", code="forbidden") == 1
    assert value(samples, "commy_client_requests_total") >= 10
    assert value(samples, "commy_clients_accepted_total") == 2
    assert value(samples, "commy_log_records_total", level="info") >= 1
    # A single server has no peers: no peer protocol, no peer states, no round trips.
    assert not any(labels and dict(labels).get("protocol") == "peer" for _, labels in samples)
    assert "commy_peer_state" in families and "commy_heartbeat_rtt_seconds" in families  # shown, and empty
    assert not [name for name, _ in samples if name == "commy_peer_state" or name.startswith("commy_heartbeat_rtt")]


def test_the_peer_codec_counts_frames_errors_and_lag_per_service() -> None:
    now = 1_800_000_000.0
    codec = MeteredCodec(lambda: now)
    a, b = Address("n1", "replicator"), Address("n2", "replicator")
    stamp = (int((now - 0.25) * 1000) << MILLIS_SHIFT) | 2  # written 250 ms before it arrives
    writes = (WriteRecord("x", b"1", stamp, 0, "alice"), WriteRecord("y", b"2", stamp, 0, "alice"))
    data = codec.encode(Envelope(7, None, a, b, now, Replicate("acme", "sensors", writes, ())))
    codec.decode(data)
    error = codec.encode(Envelope(8, 7, b, a, now, Error("bad_request", "no")))
    codec.decode(error)
    counts = codec.counts
    assert (counts.messages_out, counts.messages_in) == (2, 2)
    assert counts.bytes_out == counts.bytes_in == len(data) + len(error) + 2 * FRAME_HEADER
    assert counts.errors_out == counts.errors_in == {"bad_request": 1}
    assert codec.lag_p99("acme", "sensors") == pytest.approx(0.25, abs=0.002)
    assert codec.lag_p99("acme", "other") is None
    for i in range(LAG_WINDOW + 5):  # only the last LAG_WINDOW writes count
        fresh = (int(now * 1000) << MILLIS_SHIFT) | 2
        codec.decode(codec.encode(Envelope(9 + i, None, a, b, now, Replicate("acme", "sensors",
                                                                                 (WriteRecord("x", b"", fresh, 0, ""),),
                                                                                 ()))))
    assert codec.lag_p99("acme", "sensors") == pytest.approx(0.0, abs=0.002)
    assert len(codec.lag[("acme", "sensors")]) == LAG_WINDOW


def test_the_lag_per_service_takes_bounded_memory() -> None:
    now = 1_800_000_000.0
    codec = MeteredCodec(lambda: now)
    a, b = Address("n1", "replicator"), Address("n2", "replicator")
    write = (WriteRecord("x", b"", (int(now * 1000) << MILLIS_SHIFT) | 2, 0, ""),)
    for i in range(MAX_SERVICES + 3):
        codec.decode(codec.encode(Envelope(i + 1, None, a, b, now, Replicate("acme", f"s{i}", write, ()))))
    assert len(codec.lag) == MAX_SERVICES
    assert ("acme", "s0") not in codec.lag and ("acme", f"s{MAX_SERVICES + 2}") in codec.lag  # least recent out
    stored = sum(w.ring.buffer_info()[1] * w.ring.itemsize for w in codec.lag.values())
    assert stored == MAX_SERVICES * LAG_WINDOW * 8 <= 1 << 20  # fixed rings of doubles, allocated once
    window = LagWindow(4)
    for sample in (5.0, 1.0, 2.0, 3.0, 4.0):
        window.append(sample)
    assert len(window) == 4 and sorted(window.samples()) == [1.0, 2.0, 3.0, 4.0]  # the oldest went


@pytest.mark.parametrize("compression", [None, "deflate"])
def test_client_bytes_are_payloads_both_ways_with_or_without_an_extension(tmp_path: Path,
                                                                         compression: str | None) -> None:
    # Frames the gateway builds itself (no extension) and payloads permessage-deflate frames must
    # count alike: what the client receives as messages, byte for byte.
    async def main() -> tuple[int, int, bool, GatewayStats]:
        srv = await start_server(tmp_path / "data", ("127.0.0.1", 0), gateway=GatewayConfig(compression=compression))
        try:
            async with ws_connect(srv.url, compression=compression) as ws:
                sent = received = 0
                for frame in (b"\x01", b"not msgpack at all" * 10, bytes(300)):
                    await ws.send(frame)
                    sent += len(frame)
                    reply = await asyncio.wait_for(ws.recv(), 10)
                    received += len(reply)
                raw = next(iter(srv.gateway.conns.values())).raw
                return sent, received, raw, srv.gateway.stats
        finally:
            await srv.close()

    sent, received, raw, stats = run(main())
    assert raw is (compression is None)  # each path really taken
    assert stats.messages_out == 3 and stats.bytes_out == received
    assert stats.messages_in == 3 and stats.bytes_in == sent


def test_rtt_histogram_buckets_are_cumulative() -> None:
    hist = RttHistogram()
    for rtt in (0.0002, 0.0007, 0.003, 0.003, 7.0):
        hist.observe(rtt)
    cumulative = dict(hist.cumulative())
    assert hist.count == 5 and hist.total == pytest.approx(7.0069)
    assert cumulative[0.0005] == 1 and cumulative[0.001] == 2 and cumulative[0.005] == 4
    assert cumulative[RTT_BUCKETS[-1]] == 4  # 7 s is over every bound: only +Inf (the count) has it


def test_the_heartbeat_monitor_records_each_answered_round_trip() -> None:
    ctx = FakeContext(Address("n1", HEARTBEAT), now=100.0, seed=3)
    hb = ctx.bind(HeartbeatMonitor(ctx, ["n1", "n2"], HeartbeatConfig()))
    assert isinstance(hb, HeartbeatMonitor)
    hb.started()
    assert type(ctx.fire_next()) is HeartbeatTick
    ping = ctx.take_sent()[0].msg
    sent_at = ctx.now()
    ctx.current = sent_at + 0.004
    deliver(hb, HeartbeatPong(ping.seq, sent_at, ServerStatus.HEALTHY), Address("n2", HEARTBEAT))  # type: ignore[attr-defined]
    deliver(hb, HeartbeatPong(ping.seq, sent_at, ServerStatus.HEALTHY), Address("n2", HEARTBEAT))  # type: ignore[attr-defined]
    assert hb.table.views["n2"].rtt == pytest.approx(0.004)
    hist = hb.rtts["n2"]
    assert hist.count == 1 and hist.total == pytest.approx(0.004)  # the duplicate says nothing new
    assert dict(hist.cumulative())[0.005] == 1 and dict(hist.cumulative())[0.0025] == 0


def test_scrapes_from_two_servers_in_one_process_do_not_mix(tmp_path: Path) -> None:
    async def main() -> tuple[str, str]:
        one = await start_server(tmp_path / "one", ("127.0.0.1", 0), node_id="one")
        two = await start_server(tmp_path / "two", ("127.0.0.1", 0), node_id="two")
        try:
            first, second = await asyncio.gather(fetch(port_of(one), "/metrics"), fetch(port_of(two), "/metrics"))
            return first[2].decode(), second[2].decode()
        finally:
            await one.close()
            await two.close()

    first, second = run(main())
    assert 'node="one"' in first and 'node="two"' not in first
    assert 'node="two"' in second and 'node="one"' not in second


def test_revocation_rotation_and_a_touched_honeypot_show_in_the_metrics(tmp_path: Path) -> None:
    # carol maps the service file; revoking her rotates the file and keeps the old one as a
    # honeypot; removing that file is "touching" it: the next sweep logs `honeypot_touched`.
    async def main() -> str:
        srv = await start_server(tmp_path / "data", ("127.0.0.1", 0), honeypot=True)
        try:
            assert srv.bootstrap_key is not None
            async with AsyncClient.connect(srv.url) as admin:
                await admin.authenticate("", api_key=srv.bootstrap_key)
                await admin.create_tenant("acme")
                await admin.create_service("acme", "sensors")
                _, key = await admin.create_api_key("carol", tenant="acme", scopes=["write"])
                async with AsyncClient.connect(srv.url) as carol:
                    await carol.authenticate("acme", api_key=key)
                    sensors = carol.service("acme", "sensors", local=True)
                    assert await sensors.map() and sensors.mapping is not None
                    old = Path(sensors.mapping.path)
                    await admin.authenticate("acme", api_key=srv.bootstrap_key)
                    await admin.revoke("acme", "carol")
                    assert await until(lambda: srv.events is not None and srv.events.events["file_rotated"] == 1, 10)
                    assert old.exists(), "the rotated-away file is kept as a honeypot"
                    old.unlink()
                    assert await until(lambda: srv.events is not None
                                       and srv.events.events["honeypot_touched"] == 1, 10)
                    return (await fetch(port_of(srv), "/metrics"))[2].decode()
        finally:
            await srv.close()

    _, samples = parse(run(main()))
    assert value(samples, "commy_file_rotations_total") == 1
    assert value(samples, "commy_honeypot_alerts_total") == 1
    assert value(samples, "commy_sessions_revoked_total") == 1
    assert value(samples, "commy_log_records_total", level="error") >= 1  # the alert is an error record
