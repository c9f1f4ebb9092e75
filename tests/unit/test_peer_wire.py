"""Unit tests for murder.peer.wire: exact bytes, framing, range checks, Bitfield."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from murder.errors import ProtocolError
from murder.peer import wire
from murder.peer.wire import Bitfield, MessageReader

IH = bytes(range(20))
PID = b"-MU0100-abcdefghijkl"

# Geometry used by most reader tests: 10 pieces of 32 KiB, the last 1000 bytes.
NUM, PLEN = 10, 2**15
TOTAL = PLEN * 9 + 1000


def reader(fast: bool = False) -> MessageReader:
    return MessageReader(NUM, PLEN, TOTAL, fast=fast)


def frame(msg_id: int, payload: bytes = b"") -> bytes:
    return struct.pack(">IB", 1 + len(payload), msg_id) + payload


class EncoderTests:
    """Every encoder produces the exact BEP 3 / BEP 6 bytes."""

    def test_handshake_with_fast_bit(self):
        """The handshake is pstrlen, pstr, reserved (fast bit 0x04 of byte 7), hash, id."""
        assert wire.handshake(IH, PID) == (
            b"\x13BitTorrent protocol" + b"\x00" * 7 + b"\x04" + IH + PID)
        assert len(wire.handshake(IH, PID)) == wire.HANDSHAKE_LENGTH == 68

    def test_handshake_without_fast_bit(self):
        """fast=False leaves all reserved bytes zero."""
        assert wire.handshake(IH, PID, fast=False) == (
            b"\x13BitTorrent protocol" + b"\x00" * 8 + IH + PID)

    @pytest.mark.parametrize("msg_id, expected", [
        (wire.CHOKE, b"\x00\x00\x00\x01\x00"),
        (wire.UNCHOKE, b"\x00\x00\x00\x01\x01"),
        (wire.INTERESTED, b"\x00\x00\x00\x01\x02"),
        (wire.NOT_INTERESTED, b"\x00\x00\x00\x01\x03"),
        (wire.HAVE_ALL, b"\x00\x00\x00\x01\x0e"),
        (wire.HAVE_NONE, b"\x00\x00\x00\x01\x0f"),
    ])
    def test_simple_messages(self, msg_id, expected):
        """Payload-less messages are length 1 plus the id byte."""
        assert wire.simple(msg_id) == expected

    def test_keepalive(self):
        """A keep-alive is four zero bytes."""
        assert wire.KEEPALIVE == b"\x00\x00\x00\x00"

    def test_have(self):
        """HAVE: length 5, id 4, big-endian index."""
        assert wire.have(0x01020304) == b"\x00\x00\x00\x05\x04\x01\x02\x03\x04"

    def test_allowed_fast(self):
        """ALLOWED_FAST: length 5, id 0x11, index."""
        assert wire.allowed_fast(7) == b"\x00\x00\x00\x05\x11\x00\x00\x00\x07"

    @pytest.mark.parametrize("fn, msg_id", [
        (wire.request, 6), (wire.cancel, 8), (wire.reject, 0x10)])
    def test_block_messages(self, fn, msg_id):
        """REQUEST/CANCEL/REJECT: length 13, id, index, begin, length."""
        assert fn(1, 0x4000, 0x4000) == (
            b"\x00\x00\x00\x0d" + bytes([msg_id]) + b"\x00\x00\x00\x01"
            + b"\x00\x00\x40\x00" + b"\x00\x00\x40\x00")

    def test_piece_header(self):
        """PIECE header: length 9+block, id 7, index, begin (block bytes follow)."""
        assert wire.piece_header(2, 16384, 100) == (
            b"\x00\x00\x00\x6d\x07\x00\x00\x00\x02\x00\x00\x40\x00")

    def test_bitfield(self):
        """BITFIELD: length 1+n, id 5, the raw bytes."""
        assert wire.bitfield(b"\xa0\x01") == b"\x00\x00\x00\x03\x05\xa0\x01"


class HandshakeParseTests:
    """parse_handshake accepts exactly a BEP 3 handshake."""

    def test_round_trip(self):
        """The parsed fields are the encoded ones; the fast bit is detected."""
        reserved, ih, pid = wire.parse_handshake(wire.handshake(IH, PID))
        assert (ih, pid) == (IH, PID)
        assert wire.supports_fast(reserved)
        reserved, _, _ = wire.parse_handshake(wire.handshake(IH, PID, fast=False))
        assert not wire.supports_fast(reserved)

    def test_short(self):
        """Fewer than 68 bytes is refused."""
        with pytest.raises(ProtocolError, match="short handshake"):
            wire.parse_handshake(wire.handshake(IH, PID)[:-1])

    def test_wrong_protocol_string(self):
        """Another protocol's greeting is refused."""
        data = b"\x13BitTorrent protocoX" + bytes(48)
        with pytest.raises(ProtocolError, match="not a BitTorrent handshake"):
            wire.parse_handshake(data)

    def test_wrong_pstrlen(self):
        """A wrong length byte is refused even if the string follows."""
        data = b"\x12" + wire.handshake(IH, PID)[1:]
        with pytest.raises(ProtocolError, match="not a BitTorrent handshake"):
            wire.parse_handshake(data)


def sample_stream() -> tuple[bytes, list[tuple]]:
    """Bytes of several valid messages and the tuples the reader must return."""
    block = bytes(range(256)) * 4
    parts = [
        (wire.KEEPALIVE, (None, None, None, None)),
        (wire.simple(wire.CHOKE), (wire.CHOKE, None, None, None)),
        (wire.simple(wire.UNCHOKE), (wire.UNCHOKE, None, None, None)),
        (wire.simple(wire.INTERESTED), (wire.INTERESTED, None, None, None)),
        (wire.simple(wire.NOT_INTERESTED), (wire.NOT_INTERESTED, None, None, None)),
        (wire.have(9), (wire.HAVE, 9, None, None)),
        (wire.bitfield(b"\xff\xc0"), (wire.BITFIELD, b"\xff\xc0", None, None)),
        (wire.request(3, 16384, 16384), (wire.REQUEST, 3, 16384, 16384)),
        (wire.cancel(9, 0, 1000), (wire.CANCEL, 9, 0, 1000)),
        (wire.piece_header(4, 512, len(block)) + block, (wire.PIECE, 4, 512, block)),
        (frame(wire.PORT, b"\x1a\xe1"), (wire.PORT, None, None, None)),
        (frame(20, b"\x00d1:md"), (-1, 20, None, None)),
        (wire.simple(wire.HAVE_ALL), (wire.HAVE_ALL, None, None, None)),
        (wire.reject(1, 0, 16384), (wire.REJECT, 1, 0, 16384)),
        (wire.allowed_fast(2), (wire.ALLOWED_FAST, 2, None, None)),
        (frame(wire.SUGGEST, b"\x00\x00\x00\x05"), (wire.SUGGEST, 5, None, None)),
    ]
    return b"".join(p[0] for p in parts), [p[1] for p in parts]


class MessageReaderTests:
    """MessageReader frames a stream and validates every field."""

    def test_whole_stream(self):
        """A stream fed at once yields every message in order, nothing buffered."""
        data, expected = sample_stream()
        r = reader(fast=True)
        assert r.feed(data) == expected
        assert r.buffered == 0

    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.integers(min_value=0, max_value=2000), max_size=30))
    def test_arbitrary_chunk_splits(self, cuts):
        """However the stream is split into chunks, the same messages come out."""
        data, expected = sample_stream()
        points = sorted({c % (len(data) + 1) for c in cuts})
        r = reader(fast=True)
        got = []
        prev = 0
        for p in points + [len(data)]:
            got.extend(r.feed(data[prev:p]))
            prev = p
        assert got == expected
        assert r.buffered == 0

    def test_partial_message_is_buffered(self):
        """An incomplete message yields nothing and is kept for the next feed."""
        r = reader()
        msg = wire.request(1, 0, 16384)
        assert r.feed(msg[:7]) == []
        assert r.buffered == 7
        assert r.feed(msg[7:]) == [(wire.REQUEST, 1, 0, 16384)]

    def test_block_of_a_whole_chunk_is_not_copied(self):
        """A PIECE wholly inside one chunk is handed on as a view of that chunk."""
        data = wire.piece_header(1, 0, 4) + b"abcd" + wire.have(2)
        (piece, have) = reader().feed(data)
        assert piece == (wire.PIECE, 1, 0, b"abcd")
        assert isinstance(piece[3], memoryview) and piece[3].obj is data
        assert have == (wire.HAVE, 2, None, None)

    def test_block_cut_by_a_chunk_boundary_is_assembled(self):
        """A PIECE split across chunks comes out whole, as its own bytes."""
        data = wire.piece_header(1, 0, 4) + b"abcd"
        r = reader()
        assert r.feed(data[:11]) == []
        ((msg_id, index, begin, block),) = r.feed(data[11:])
        assert (msg_id, index, begin, bytes(block)) == (wire.PIECE, 1, 0, b"abcd")
        assert r.buffered == 0

    def test_mutable_input_is_snapshotted(self):
        """Changing a bytearray after feeding it does not change the block handed on."""
        data = bytearray(wire.piece_header(1, 0, 4) + b"abcd")
        ((_, _, _, block),) = reader().feed(data)
        data[-4:] = b"XXXX"
        assert bytes(block) == b"abcd"

    def test_last_piece_short_block_in_range(self):
        """A request ending exactly at the short last piece's end is accepted."""
        assert reader().feed(wire.request(NUM - 1, 0, 1000)) == [(wire.REQUEST, 9, 0, 1000)]

    @pytest.mark.parametrize("data, match", [
        (wire.request(NUM, 0, 16384), "request for piece 10 of 10"),
        (wire.cancel(2**32 - 1, 0, 16384), "request for piece"),
        (wire.request(0, PLEN - 16383, 16384), "beyond the end of piece 0"),
        (wire.request(NUM - 1, 0, 1001), "beyond the end of piece 9"),
        (wire.request(0, 0, 2**17 + 1), "request of 131073 bytes"),
        (wire.request(0, 0, 0), "request of 0 bytes"),
        (wire.have(NUM), "have for piece 10 of 10"),
        (wire.piece_header(NUM, 0, 4) + b"abcd", "piece for piece 10 of 10"),
        (wire.piece_header(NUM - 1, 999, 2) + b"ab", "beyond the end of piece 9"),
        (wire.piece_header(0, 0, 0), "truncated piece message"),
        (frame(wire.PIECE, b"\x00" * 8), "truncated piece message"),
        (frame(wire.HAVE, b"\x00\x00\x00"), "message 4 with 3 payload bytes"),
        (frame(wire.REQUEST, bytes(13)), "message 6 with 13 payload bytes"),
        (frame(wire.CHOKE, b"x"), "message 0 with 1 payload bytes"),
        (frame(wire.PORT, b"\x00"), "message 9 with 1 payload bytes"),
    ])
    def test_out_of_range(self, data, match):
        """Out-of-range or malformed messages raise ProtocolError."""
        with pytest.raises(ProtocolError, match=match):
            reader(fast=True).feed(data)

    def test_request_of_128k_is_allowed(self):
        """The request bound is inclusive: exactly 128 KiB is accepted."""
        r = MessageReader(2, 2**18, 2**19)
        assert r.feed(wire.request(0, 0, 2**17)) == [(wire.REQUEST, 0, 0, 2**17)]

    def test_oversized_message(self):
        """A length prefix above the maximum is refused before the body arrives."""
        r = reader()
        with pytest.raises(ProtocolError, match="exceeds the maximum"):
            r.feed(struct.pack(">I", 2**20) + b"\x07")

    def test_huge_bitfield_length_refused(self):
        """A bitfield far larger than the torrent needs is refused by the framing bound."""
        with pytest.raises(ProtocolError, match="exceeds the maximum"):
            reader().feed(struct.pack(">IB", 200_000, wire.BITFIELD))

    @pytest.mark.parametrize("data", [
        wire.simple(wire.HAVE_ALL), wire.simple(wire.HAVE_NONE), wire.reject(0, 0, 16384),
        wire.allowed_fast(1), frame(wire.SUGGEST, b"\x00\x00\x00\x01"),
    ])
    def test_fast_messages_need_negotiation(self, data):
        """BEP 6 messages without the fast bit negotiated are a protocol error."""
        with pytest.raises(ProtocolError, match="not negotiated"):
            reader(fast=False).feed(data)

    def test_messages_before_error_are_not_returned_after(self):
        """After an error the reader raises; nothing after the bad message is parsed."""
        r = reader()
        with pytest.raises(ProtocolError):
            r.feed(wire.have(1) + wire.have(NUM) + wire.have(2))


class BitfieldTests:
    """Bitfield: BEP 3 layout, validation of received bitfields, set operations."""

    def test_layout_high_bit_first(self):
        """Piece 0 is the high bit of byte 0; piece 9 is bit 0x40 of byte 1."""
        bf = Bitfield(10)
        bf.add(0)
        bf.add(9)
        assert bf.tobytes() == b"\x80\x40"
        assert 0 in bf and 9 in bf and 1 not in bf

    def test_full_clears_spare_bits(self):
        """A full bitfield of 10 pieces is ff c0: spare bits stay zero."""
        bf = Bitfield(10, full=True)
        assert bf.tobytes() == b"\xff\xc0"
        assert bf.complete and bf.count == 10
        assert Bitfield(16, full=True).tobytes() == b"\xff\xff"

    def test_add_discard_count(self):
        """add reports novelty, count follows add/discard, complete when all set."""
        bf = Bitfield(3)
        assert bf.add(1) is True
        assert bf.add(1) is False
        assert bf.count == 1
        bf.discard(1)
        bf.discard(1)
        assert bf.count == 0
        for i in range(3):
            bf.add(i)
        assert bf.complete

    def test_iter_and_missing(self):
        """Iteration yields set indices ascending; missing() yields the rest."""
        bf = Bitfield.from_bytes(12, b"\x81\x10")
        assert list(bf) == [0, 7, 11]
        assert list(bf.missing()) == [1, 2, 3, 4, 5, 6, 8, 9, 10]
        assert bf.count == 3

    def test_from_bytes_wrong_size(self):
        """A received bitfield must have exactly ceil(n/8) bytes."""
        with pytest.raises(ProtocolError, match="bitfield of 3 bytes for 10 pieces"):
            Bitfield.from_bytes(10, b"\xff\xc0\x00")
        with pytest.raises(ProtocolError, match="bitfield of 1 bytes for 10 pieces"):
            Bitfield.from_bytes(10, b"\xff")

    def test_from_bytes_spare_bits(self):
        """Spare bits past the last piece must be clear."""
        with pytest.raises(ProtocolError, match="spare bits set"):
            Bitfield.from_bytes(10, b"\xff\xe0")
        with pytest.raises(ProtocolError, match="spare bits set"):
            Bitfield.from_bytes(10, b"\x00\x01")

    @given(st.integers(min_value=1, max_value=100), st.data())
    def test_round_trip(self, n, data):
        """from_bytes(tobytes()) keeps exactly the same set."""
        members = data.draw(st.sets(st.integers(min_value=0, max_value=n - 1)))
        bf = Bitfield(n)
        for i in members:
            bf.add(i)
        back = Bitfield.from_bytes(n, bf.tobytes())
        assert set(back) == members and back.count == len(members)
