"""Peer wire protocol codec (BEP 3 + BEP 6 fast extension): pure, no I/O.

:class:`MessageReader` turns a byte stream into ``(id, payload)`` messages and
checks framing and field ranges; anything hostile raises
:class:`~murder.errors.ProtocolError` so the protocol layer can drop the
connection.  Encoders return exact bytes.
"""

from __future__ import annotations

import struct
from typing import Any, Iterator

from murder.errors import ProtocolError
from murder.metainfo import piece_size

PSTR = b"BitTorrent protocol"
HANDSHAKE_LENGTH = 1 + len(PSTR) + 8 + 20 + 20
BLOCK_SIZE = 2**14
#: Requests larger than this are refused (the issue's bound; clients use 16 KiB).
MAX_REQUEST = 2**17

CHOKE, UNCHOKE, INTERESTED, NOT_INTERESTED, HAVE, BITFIELD, REQUEST, PIECE, CANCEL, PORT = range(10)
SUGGEST, HAVE_ALL, HAVE_NONE, REJECT, ALLOWED_FAST = 0x0D, 0x0E, 0x0F, 0x10, 0x11
EXTENDED = 20

#: Reserved-bytes flag for the fast extension (BEP 6): bit 0x04 of byte 7.
FAST_BIT = (7, 0x04)

_FIXED_LENGTHS = {
    CHOKE: 0, UNCHOKE: 0, INTERESTED: 0, NOT_INTERESTED: 0, HAVE_ALL: 0, HAVE_NONE: 0,
    HAVE: 4, SUGGEST: 4, ALLOWED_FAST: 4, PORT: 2,
    REQUEST: 12, CANCEL: 12, REJECT: 12,
}
_FAST_ONLY = {SUGGEST, HAVE_ALL, HAVE_NONE, REJECT, ALLOWED_FAST}

_LEN = struct.Struct(">I")
_HAVE = struct.Struct(">IBI")
_REQ = struct.Struct(">IBIII")
_PIECE_HEAD = struct.Struct(">IBII")
_III = struct.Struct(">III")
_II = struct.Struct(">II")


def handshake(info_hash: bytes, peer_id: bytes, fast: bool = True) -> bytes:
    reserved = bytearray(8)
    if fast:
        reserved[FAST_BIT[0]] |= FAST_BIT[1]
    return bytes([len(PSTR)]) + PSTR + bytes(reserved) + info_hash + peer_id


def parse_handshake(data: bytes) -> tuple[bytes, bytes, bytes]:
    """Return ``(reserved, info_hash, peer_id)`` from 68 handshake bytes."""
    if len(data) != HANDSHAKE_LENGTH:
        raise ProtocolError("short handshake")
    if data[0] != len(PSTR) or data[1:20] != PSTR:
        raise ProtocolError("not a BitTorrent handshake")
    return bytes(data[20:28]), bytes(data[28:48]), bytes(data[48:68])


def supports_fast(reserved: bytes) -> bool:
    return bool(reserved[FAST_BIT[0]] & FAST_BIT[1])


# ---------------------------------------------------------------- encoders

KEEPALIVE = b"\x00\x00\x00\x00"


def simple(msg_id: int) -> bytes:
    """choke / unchoke / interested / not interested / have all / have none."""
    return b"\x00\x00\x00\x01" + bytes([msg_id])


def have(index: int) -> bytes:
    return _HAVE.pack(5, HAVE, index)


def allowed_fast(index: int) -> bytes:
    return _HAVE.pack(5, ALLOWED_FAST, index)


def request(index: int, begin: int, length: int) -> bytes:
    return _REQ.pack(13, REQUEST, index, begin, length)


def cancel(index: int, begin: int, length: int) -> bytes:
    return _REQ.pack(13, CANCEL, index, begin, length)


def reject(index: int, begin: int, length: int) -> bytes:
    return _REQ.pack(13, REJECT, index, begin, length)


def piece_header(index: int, begin: int, length: int) -> bytes:
    """Header of a PIECE message whose ``length`` block bytes follow."""
    return _PIECE_HEAD.pack(9 + length, PIECE, index, begin)


def bitfield(bits: bytes) -> bytes:
    return _LEN.pack(1 + len(bits)) + bytes([BITFIELD]) + bits


# ------------------------------------------------------------------ bitfield


class Bitfield:
    """A set of piece indices with the BEP 3 byte layout (high bit first)."""

    __slots__ = ("length", "_bits", "count", "_int")

    def __init__(self, length: int, full: bool = False) -> None:
        self.length = length
        self._int: int | None = None
        nbytes = (length + 7) // 8
        if full:
            self._bits = bytearray(b"\xff" * nbytes)
            if length % 8:
                self._bits[-1] = (0xFF << (8 - length % 8)) & 0xFF
            self.count = length
        else:
            self._bits = bytearray(nbytes)
            self.count = 0

    @classmethod
    def from_bytes(cls, length: int, data: bytes) -> "Bitfield":
        """Validate a received bitfield: exact size, spare bits clear."""
        nbytes = (length + 7) // 8
        if len(data) != nbytes:
            raise ProtocolError(f"bitfield of {len(data)} bytes for {length} pieces")
        if length % 8 and data[-1] & (0xFF >> (length % 8)):
            raise ProtocolError("bitfield has spare bits set")
        bf = cls(length)
        bf._bits[:] = data
        bf.count = sum(bin(b).count("1") for b in data)
        return bf

    def as_int(self) -> int:
        """The set as one integer (piece ``i`` is bit ``8 * nbytes - 1 - i``).

        Why: set tests over every piece (does this peer hold anything we may
        start?) are one ``&`` of two integers instead of a Python-level
        membership test per piece: the picker's scans were the peer's largest
        CPU cost at N=32 (bench/README.md, "Session 5").  Cached until the
        set changes.
        """
        value = self._int
        if value is None:
            value = self._int = int.from_bytes(self._bits, "big")
        return value

    def __contains__(self, index: int) -> bool:
        return bool(self._bits[index >> 3] & (0x80 >> (index & 7)))

    def add(self, index: int) -> bool:
        """Set ``index``; return True if it was not set before."""
        mask = 0x80 >> (index & 7)
        if self._bits[index >> 3] & mask:
            return False
        self._bits[index >> 3] |= mask
        self.count += 1
        self._int = None
        return True

    def discard(self, index: int) -> None:
        mask = 0x80 >> (index & 7)
        if self._bits[index >> 3] & mask:
            self._bits[index >> 3] &= ~mask & 0xFF
            self.count -= 1
            self._int = None

    @property
    def complete(self) -> bool:
        return self.count == self.length

    def __iter__(self) -> Iterator[int]:
        bits = self._bits
        for byte_index, byte in enumerate(bits):
            if byte:
                base = byte_index * 8
                for bit in range(8):
                    if byte & (0x80 >> bit):
                        yield base + bit

    def missing(self) -> Iterator[int]:
        return (i for i in range(self.length) if i not in self)

    def tobytes(self) -> bytes:
        return bytes(self._bits)


# ------------------------------------------------------------------- decoder


class MessageReader:
    """Incremental framing: feed bytes, get validated messages.

    Messages are ``(msg_id, a, b, c)`` tuples: for HAVE/ALLOWED_FAST/SUGGEST
    ``a`` is the index; REQUEST/CANCEL/REJECT carry ``(index, begin, length)``;
    PIECE carries ``(index, begin, block)`` with ``block`` a bytes object;
    BITFIELD carries the raw bytes in ``a``; a keep-alive is ``(None, …)``.
    Ranges are checked against the torrent's geometry here, so the layers
    above only ever see in-range numbers.
    """

    def __init__(self, num_pieces: int, piece_length: int, total_length: int,
                 fast: bool = False) -> None:
        self.num_pieces = num_pieces
        self.piece_length = piece_length
        self.total_length = total_length
        self.fast = fast
        self._buffer = bytearray()
        self._max_message = max(1 + (num_pieces + 7) // 8, 9 + MAX_REQUEST) + 16

    def _piece_size(self, index: int) -> int:
        return piece_size(index, self.num_pieces, self.piece_length, self.total_length)

    def _check_block(self, index: int, begin: int, length: int, what: str) -> None:
        if index >= self.num_pieces:
            raise ProtocolError(f"{what} for piece {index} of {self.num_pieces}")
        if length == 0 or length > MAX_REQUEST:
            raise ProtocolError(f"{what} of {length} bytes")
        if begin + length > self._piece_size(index):
            raise ProtocolError(f"{what} beyond the end of piece {index}")

    def feed(self, data: bytes) -> list[tuple[Any, ...]]:
        """Take ``data`` and return every complete message it finished.

        Messages wholly inside ``data`` are parsed from it in place, and a
        PIECE's block is a zero-copy ``memoryview`` of it (``data`` is
        immutable, so the view stays valid; the picker copies it once, into
        the piece).  Only a message cut by a chunk boundary is assembled in
        a small buffer.  Appending every chunk to one buffer, copying each
        block out of it and shifting the rest cost two extra copies of the
        whole payload (bench/README.md, "Session 6: the reader").
        """
        if type(data) is not bytes:  # a mutable buffer would change under the views
            data = bytes(data)
        out: list[tuple[Any, ...]] = []
        pos = 0
        buf = self._buffer
        if buf:
            pos = self._complete_buffered(data, out)
            if buf:  # still incomplete: all of data went into it
                return out
        end = len(data)
        if pos < end:
            view = memoryview(data)
            pos = self._parse(data, view, pos, end, out, True)
            if pos < end:
                buf += view[pos:]
        return out

    def _complete_buffered(self, data: bytes, out: list[tuple[Any, ...]]) -> int:
        """Move into the buffer what its cut message still needs from ``data``.

        Returns how many bytes of ``data`` were taken; the buffer is emptied
        once its message is complete and parsed.
        """
        buf = self._buffer
        taken = 0
        if len(buf) < 4:
            taken = min(4 - len(buf), len(data))
            buf += data[:taken]
            if len(buf) < 4:
                return taken
        length: int = _LEN.unpack_from(buf, 0)[0]
        if length > self._max_message:
            raise ProtocolError(f"message of {length} bytes exceeds the maximum")
        more = min(4 + length - len(buf), len(data) - taken)
        buf += data[taken:taken + more]
        taken += more
        if len(buf) == 4 + length:
            view = memoryview(buf)
            try:
                self._parse(buf, view, 0, len(buf), out, False)
            finally:
                view.release()
            del buf[:]
        return taken

    def _parse(self, buf: bytes | bytearray, view: memoryview, pos: int, end: int,
               out: list[tuple[Any, ...]], keep_views: bool) -> int:
        """Append the complete messages of ``buf[pos:end]``; return where they stop.

        With ``keep_views`` (``buf`` is immutable bytes) a PIECE block is a
        view of ``buf``; otherwise it is copied out.
        """
        while end - pos >= 4:
            (length,) = _LEN.unpack_from(buf, pos)
            if length == 0:
                out.append((None, None, None, None))
                pos += 4
                continue
            if length > self._max_message:
                raise ProtocolError(f"message of {length} bytes exceeds the maximum")
            if end - pos - 4 < length:
                break
            msg_id = buf[pos + 4]
            body = pos + 5
            pos += 4 + length
            size = length - 1
            if msg_id == PIECE:
                if size < 9:
                    raise ProtocolError("truncated piece message")
                index, begin = _II.unpack_from(buf, body)
                block = view[body + 8:pos] if keep_views else bytes(view[body + 8:pos])
                self._check_block(index, begin, len(block), "piece")
                out.append((PIECE, index, begin, block))
                continue
            fixed = _FIXED_LENGTHS.get(msg_id)
            if fixed is not None:
                if size != fixed:
                    raise ProtocolError(f"message {msg_id} with {size} payload bytes")
                if msg_id in _FAST_ONLY and not self.fast:
                    raise ProtocolError(f"fast-extension message {msg_id} not negotiated")
                if fixed == 12:
                    index, begin, blen = _III.unpack_from(buf, body)
                    self._check_block(index, begin, blen, "request")
                    out.append((msg_id, index, begin, blen))
                elif fixed == 4:
                    (index,) = _LEN.unpack_from(buf, body)
                    if index >= self.num_pieces:
                        raise ProtocolError(f"have for piece {index} of {self.num_pieces}")
                    out.append((msg_id, index, None, None))
                else:
                    out.append((msg_id, None, None, None))
            elif msg_id == BITFIELD:
                out.append((BITFIELD, bytes(view[body:pos]), None, None))
            else:
                # Unknown or extension messages (BEP 10, DHT port…) are skipped.
                out.append((-1, msg_id, None, None))
        return pos

    @property
    def buffered(self) -> int:
        return len(self._buffer)
