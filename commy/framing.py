"""Length-prefixed framing: a 4-byte big-endian payload length, then the payload (sans-IO).

`FrameDecoder.feed(data)` accepts any split of the stream -- one byte at a time included -- and
returns the complete payloads so far. The length is checked against `max_frame` as soon as the
4-byte header is complete, before a single payload byte is buffered, so a hostile peer cannot make
us allocate a large buffer. After a violation the decoder stays failed: the link must be closed.
"""

from __future__ import annotations

import struct

from commy.errors import TOO_LARGE, LocalProtocolError, RemoteProtocolError

HEADER_SIZE = 4
_HEADER = struct.Struct(">I")
_unpack_header = _HEADER.unpack_from
pack_header = _HEADER.pack
"""The 4-byte header of a payload of the given length (callers check max_frame first)."""
DEFAULT_MAX_FRAME = 16 * 1024 * 1024


def encode_frame(payload: bytes, max_frame: int = DEFAULT_MAX_FRAME) -> bytes:
    size = len(payload)
    if size > max_frame or size > 0xFFFFFFFF:
        raise LocalProtocolError(f"frame of {size} bytes exceeds max_frame {max_frame}")
    return pack_header(size) + payload  # struct: faster than int.to_bytes, which runs per message


class FrameDecoder:
    """Incremental decoder of length-prefixed frames."""

    __slots__ = ("_buf", "_failed", "_first_limit", "_need", "max_frame")

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME, first_frame_limit: int | None = None) -> None:
        """`first_frame_limit`, if given, caps the first frame only (a handshake is small; a peer
        that has not identified itself may not make us buffer `max_frame` bytes)."""
        if not 0 < max_frame < 2**32:
            raise LocalProtocolError(f"max_frame must be in 1..2**32-1, got {max_frame}")
        self.max_frame = max_frame
        self._first_limit = None if first_frame_limit is None else min(first_frame_limit, max_frame)
        self._buf = bytearray()
        self._need = -1  # payload length of the frame being read, or -1 while reading a header
        self._failed: RemoteProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes held waiting for the rest of a frame."""
        return len(self._buf)

    def single(self, data: bytes) -> bytes | None:
        """The payload, when nothing is buffered and `data` is exactly one acceptable frame.

        The simulator's case, and a common one on a quiet connection: the caller skips `feed`'s
        list and loop. None means "use `feed`" (which also reports a failed decoder's error).
        """
        if self._need < 0 and not self._buf and self._failed is None and len(data) >= HEADER_SIZE:
            (size,) = _unpack_header(data)
            limit = self.max_frame if self._first_limit is None else self._first_limit
            if size == len(data) - HEADER_SIZE and size <= limit:
                self._first_limit = None
                return data[HEADER_SIZE:] if type(data) is bytes else bytes(data[HEADER_SIZE:])
        return None

    def feed(self, data: bytes) -> list[bytes]:
        if self._failed is not None:
            raise self._failed
        frame = self.single(data)
        if frame is not None:
            return [frame]  # no copy through the buffer
        buf = self._buf
        src: bytes | bytearray
        if buf:
            buf += data
            src = buf
        else:
            # Nothing buffered (the usual case: a read of whole frames plus maybe a tail): parse
            # `data` in place, so a frame costs one copy (a bytes slice), not two (into the
            # buffer, then out), and only the incomplete tail is buffered.
            src = data if type(data) is bytes else bytes(data)
        frames: list[bytes] = []
        pos = 0
        end = len(src)
        need = self._need
        max_frame = self.max_frame
        while True:
            if need < 0:
                if end - pos < HEADER_SIZE:
                    break
                (need,) = _HEADER.unpack_from(src, pos)
                pos += HEADER_SIZE
                limit = max_frame
                if self._first_limit is not None:
                    limit, self._first_limit = self._first_limit, None
                if need > limit:
                    what = "max_frame" if limit == max_frame else "the first-frame limit"
                    self._failed = RemoteProtocolError(
                        f"frame of {need} bytes exceeds {what} {limit}", code=TOO_LARGE
                    )
                    buf.clear()
                    raise self._failed
            if end - pos < need:
                break
            frames.append(bytes(src[pos : pos + need]))  # no second copy: bytes(b) of a bytes is b
            pos += need
            need = -1
        self._need = need
        if src is buf:
            if pos:
                del buf[:pos]
        elif pos < end:
            buf += memoryview(src)[pos:]
        return frames
