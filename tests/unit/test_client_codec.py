"""The client protocol's wire forms: every message round-trips as msgpack and as JSON; hostile
frames of any shape fail with a `FrameError` (never another exception) that keeps the request id
when it could be read; each side decodes only what the other side may send."""

from __future__ import annotations

import json

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from commy.client_codec import MAX_REQUEST_ID, FrameError, client_codec, server_codec
from commy.errors import BAD_FRAME, BAD_REQUEST, UNKNOWN_MESSAGE
from commy.messages import CLIENT_REPLIES, CLIENT_REQUESTS, HeartbeatPing, Message, ServerStatus, SetVariables
from tests.helpers import sweep_size
from tests.helpers.strategies import messages

SERVER, CLIENT = server_codec(), client_codec()
REQUESTS = sorted(CLIENT_REQUESTS, key=lambda c: c.TAG)
REPLIES = sorted(CLIENT_REPLIES, key=lambda c: c.TAG)
IDS = st.integers(0, MAX_REQUEST_ID)


@given(IDS, messages(REQUESTS))
def test_requests_round_trip_in_both_forms(rid: int, msg: Message) -> None:
    assert SERVER.decode_binary(CLIENT.encode_binary(rid, msg)) == (rid, msg)
    assert SERVER.decode_text(CLIENT.encode_text(rid, msg)) == (rid, msg)


@given(IDS, messages(REPLIES))
def test_replies_round_trip_in_both_forms(rid: int, msg: Message) -> None:
    assert CLIENT.decode_binary(SERVER.encode_binary(rid, msg)) == (rid, msg)
    assert CLIENT.decode_text(SERVER.encode_text(rid, msg)) == (rid, msg)


def test_the_text_form_is_readable_json() -> None:
    from commy.messages import NamedValue
    text = CLIENT.encode_text(7, SetVariables("acme", "s", (NamedValue("x", b"\x00\xff"),), "local"))
    assert json.loads(text) == {"type": "SetVariables", "id": 7, "tenant": "acme", "service": "s",
                                "variables": [{"name": "x", "value": "AP8="}], "concern": "local"}


def test_a_server_does_not_accept_replies_peer_or_local_messages() -> None:
    from commy.messages import ClientSweepTick, VariablesData
    for msg in (VariablesData("t", "s", ()), HeartbeatPing(1, 0.0, ServerStatus.HEALTHY), ClientSweepTick()):
        frame = msgpack.packb([3, [msg.TAG, msg.VERSION]])
        with pytest.raises(FrameError) as err:
            SERVER.decode_binary(frame)
        assert err.value.code == UNKNOWN_MESSAGE and err.value.request_id == 3
    with pytest.raises(FrameError) as err:
        SERVER.decode_text('{"type": "VariablesData", "id": 4, "tenant": "t", "service": "s", "variables": []}')
    assert err.value.code == UNKNOWN_MESSAGE and err.value.request_id == 4


@pytest.mark.parametrize("text, code, rid", [
    ("not json", BAD_FRAME, 0),
    ("[1, 2]", BAD_FRAME, 0),
    ('{"type": "SetVariables", "id": -1}', BAD_FRAME, 0),
    ('{"type": "SetVariables", "id": 5, "tenant": "t"}', BAD_REQUEST, 5),
    ('{"type": "Heartbeat", "id": 6, "sent_at": "soon"}', BAD_REQUEST, 6),
    ('{"type": "Heartbeat", "id": 8, "sent_at": 1.0, "extra": 1}', BAD_REQUEST, 8),
    ('{"type": "SetVariables", "id": 9, "tenant": "t", "service": "s", "concern": "",'
     ' "variables": [{"name": "x", "value": "***"}]}', BAD_REQUEST, 9),
    ("[" * 100_000, BAD_FRAME, 0),
])
def test_bad_text_frames(text: str, code: str, rid: int) -> None:
    with pytest.raises(FrameError) as err:
        SERVER.decode_text(text)
    assert (err.value.code, err.value.request_id) == (code, rid)


@given(st.binary(max_size=200))
@pytest.mark.slow
def test_random_bytes_never_raise_anything_but_frame_errors(data: bytes) -> None:
    try:
        SERVER.decode_binary(data)
    except FrameError:
        pass


LEAVES = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text(max_size=8)
          | st.binary(max_size=8))


@given(st.recursive(LEAVES, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner,
                                                                                      max_size=4), max_leaves=20))
def test_random_msgpack_values_never_raise_anything_but_frame_errors(value: object) -> None:
    for frame in (value, [1, value], [1, [124, 1, value, value, value]]):
        try:
            SERVER.decode_binary(msgpack.packb(frame, use_bin_type=True))
        except FrameError:
            pass


@given(st.text(max_size=200))
def test_random_text_never_raises_anything_but_frame_errors(text: str) -> None:
    for frame in (text, json.dumps({"type": "Subscribe", "id": 1, "tenant": text})[:-1]):
        try:
            SERVER.decode_text(frame)
        except FrameError:
            pass


def test_sweep_of_truncated_frames() -> None:
    from commy.messages import NamedValue
    frame = CLIENT.encode_binary(11, SetVariables("acme", "svc", (NamedValue("x", b"v" * 40),), ""))
    for cut in range(len(frame)):
        with pytest.raises(FrameError):
            SERVER.decode_binary(frame[:cut])
    text = CLIENT.encode_text(11, SetVariables("acme", "svc", (NamedValue("x", b"v" * 40),), ""))
    for cut in range(0, len(text), max(1, len(text) // sweep_size(40, 400))):
        with pytest.raises(FrameError):
            SERVER.decode_text(text[:cut])
