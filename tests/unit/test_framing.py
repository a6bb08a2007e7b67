"""Framing: any split of the stream yields the same frames; oversize headers fail before buffering."""

from __future__ import annotations

import random
from itertools import accumulate

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from commy.errors import TOO_LARGE, LocalProtocolError, RemoteProtocolError
from commy.framing import DEFAULT_MAX_FRAME, FrameDecoder, encode_frame
from tests.helpers import sweep_size

FRAMES = [b"hello", b"", b"\x00\x00\x00\x05", bytes(range(256)) + b"tail", b"", b"x"]
STREAM = b"".join(encode_frame(f) for f in FRAMES)


def feed_chunks(chunks: list[bytes], max_frame: int = DEFAULT_MAX_FRAME) -> list[bytes]:
    dec = FrameDecoder(max_frame)
    out: list[bytes] = []
    for chunk in chunks:
        out += dec.feed(chunk)
        assert dec.buffered < max(max_frame, 4)  # never more than one incomplete frame held
    assert dec.buffered == 0
    return out


def test_encode_frame() -> None:
    assert encode_frame(b"abc") == b"\x00\x00\x00\x03abc"
    assert encode_frame(b"") == b"\x00\x00\x00\x00"
    assert FrameDecoder().feed(encode_frame(b"abc")) == [b"abc"]


def test_zero_length_frames() -> None:
    dec = FrameDecoder(max_frame=1)
    assert dec.feed(b"\x00" * 12) == [b"", b"", b""]
    assert dec.feed(b"\x00\x00") == [] and dec.buffered == 2
    assert dec.feed(b"\x00\x00") == [b""] and dec.buffered == 0


def test_every_split_point() -> None:
    for i in range(len(STREAM) + 1):
        assert feed_chunks([STREAM[:i], STREAM[i:]]) == FRAMES, i


def test_every_pair_of_split_points() -> None:
    small = b"".join(encode_frame(f) for f in [b"ab", b"", b"cde", b"\x00\x00\x00\x01"])
    for i in range(len(small) + 1):
        for j in range(i, len(small) + 1):
            assert feed_chunks([small[:i], small[i:j], small[j:]]) == [b"ab", b"", b"cde", b"\x00\x00\x00\x01"]


def test_one_byte_at_a_time() -> None:
    ends = list(accumulate(4 + len(f) for f in FRAMES))
    dec = FrameDecoder()
    out: list[bytes] = []
    for n, byte in enumerate(STREAM, 1):
        out += dec.feed(bytes([byte]))
        assert len(out) == sum(end <= n for end in ends)  # each frame comes out with its last byte
        assert (dec.buffered == 0) == (n in ends or n - max([0, *[e for e in ends if e < n]]) == 4)
    assert out == FRAMES


@given(st.lists(st.binary(max_size=40), max_size=8), st.data())
def test_random_frames_random_chunks(frames: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(encode_frame(f, max_frame=40) for f in frames)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    assert feed_chunks(chunks, max_frame=40) == frames


def test_max_frame_boundary() -> None:
    assert FrameDecoder(max_frame=5).feed(encode_frame(b"12345", max_frame=5)) == [b"12345"]
    with pytest.raises(LocalProtocolError, match="exceeds max_frame 5"):
        encode_frame(b"123456", max_frame=5)
    for bad in (0, -1, 2**32):
        with pytest.raises(LocalProtocolError):
            FrameDecoder(max_frame=bad)


def assert_failed_for_good(dec: FrameDecoder) -> None:
    for more in (b"", encode_frame(b"ok"), b"\x00"):
        with pytest.raises(RemoteProtocolError) as info:
            dec.feed(more)
        assert info.value.code == TOO_LARGE
    assert dec.buffered == 0


def test_oversize_header_alone_is_rejected() -> None:
    dec = FrameDecoder(max_frame=100)
    header = (101).to_bytes(4, "big")
    for byte in header[:3]:
        assert dec.feed(bytes([byte])) == []
    assert dec.buffered == 3
    with pytest.raises(RemoteProtocolError, match="frame of 101 bytes exceeds max_frame 100") as info:
        dec.feed(header[3:])
    assert info.value.code == TOO_LARGE
    assert_failed_for_good(dec)


@pytest.mark.parametrize("size", [2**32 - 1, DEFAULT_MAX_FRAME + 1])
def test_oversize_header_with_payload_buffers_nothing(size: int) -> None:
    dec = FrameDecoder()
    assert dec.feed(encode_frame(b"first")) == [b"first"]
    with pytest.raises(RemoteProtocolError):
        dec.feed(size.to_bytes(4, "big") + b"\xaa" * 1000)
    assert_failed_for_good(dec)


def test_frames_before_an_oversize_header_are_lost_with_the_link() -> None:
    dec = FrameDecoder(max_frame=10)
    with pytest.raises(RemoteProtocolError):
        dec.feed(encode_frame(b"ok") + (11).to_bytes(4, "big"))
    assert_failed_for_good(dec)


@pytest.mark.slow
@settings(max_examples=sweep_size(1000, 20_000))
@given(st.binary(max_size=80), st.randoms(use_true_random=False))
def test_random_bytes_random_chunks_raise_only_remote_protocol_error(data: bytes, rnd: random.Random) -> None:
    dec = FrameDecoder(max_frame=rnd.choice([1, 16, 64, DEFAULT_MAX_FRAME]))
    pos = 0
    try:
        while pos < len(data):
            step = rnd.randint(1, 9)
            for frame in dec.feed(data[pos:pos + step]):
                assert len(frame) <= dec.max_frame
            pos += step
    except RemoteProtocolError as exc:
        assert exc.code == TOO_LARGE
        assert_failed_for_good(dec)
