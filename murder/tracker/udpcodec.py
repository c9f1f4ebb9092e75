"""BEP 15 (UDP tracker protocol) datagrams: parse and build.  Pure code.

Both sides use it: the tracker (:mod:`murder.tracker.udp`) parses requests
and builds replies, the peer (:mod:`murder.peer.udptracker`) builds requests
and parses replies.  Every malformed datagram raises
:class:`~murder.errors.UDPCodecError`; nothing here does I/O.

Layouts (all big endian)::

    connect request    protocol_id:Q action=0:I transaction:I               16 bytes
    connect reply      action=0:I transaction:I connection_id:Q             16 bytes
    announce request   connection_id:Q action=1:I transaction:I info_hash:20s
                       peer_id:20s downloaded:Q left:Q uploaded:Q event:I
                       ip:I key:I num_want:i port:H [BEP 41 options]   >= 98 bytes
    announce reply     action=1:I transaction:I interval:I leechers:I seeders:I
                       peers (6 bytes each over IPv4, 18 over IPv6)
    scrape request     connection_id:Q action=2:I transaction:I info_hash:20s * n
    scrape reply       action=2:I transaction:I (seeders:I completed:I leechers:I) * n
    error reply        action=3:I transaction:I message (UTF-8)
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import NamedTuple, Union

from murder.errors import UDPCodecError

#: The magic constant of a connect request.
PROTOCOL_ID = 0x41727101980
CONNECT, ANNOUNCE, SCRAPE, ERROR = 0, 1, 2, 3
#: BEP 15's event numbers, mapped to the HTTP names (``""``: a regular update).
EVENTS = {0: "", 1: "completed", 2: "started", 3: "stopped"}
EVENT_NUMBERS = {name: number for number, name in EVENTS.items()}
#: BEP 15: "up to about 74 torrents can be scraped at once".
MAX_SCRAPE = 74

_HEAD = struct.Struct(">QII")
_REPLY_HEAD = struct.Struct(">II")
_CONNECT_REPLY = struct.Struct(">IIQ")
_ANNOUNCE = struct.Struct(">QII20s20sQQQIIIiH")
#: The announce layout with ``key`` as its 4 raw bytes (what the store keeps):
#: ``ANNOUNCE_FIELDS.unpack_from(data)`` is :func:`unpack_announce` without a
#: Python call around it, for the tracker's hot path.
ANNOUNCE_FIELDS = struct.Struct(">QII20s20sQQQII4siH")
#: An announce's ``action`` field, as bytes 8-12 of the datagram.
ANNOUNCE_ACTION = b"\x00\x00\x00\x01"
#: Bytes of an announce request without BEP 41 options.
ANNOUNCE_SIZE = _ANNOUNCE.size
_ANNOUNCE_REPLY = struct.Struct(">IIIII")
#: An announce reply's head (action, transaction, interval, leechers,
#: seeders); the compact peers follow.  See :func:`announce_reply`.
ANNOUNCE_REPLY_HEAD = _ANNOUNCE_REPLY
_SCRAPE_ENTRY = struct.Struct(">III")


@dataclass(frozen=True, slots=True)
class ConnectRequest:
    transaction: int


class UDPAnnounce(NamedTuple):
    """An announce as BEP 15 carries it (``ip`` 0: use the sender's address).

    A NamedTuple, not a frozen dataclass: it is built for every announce, and
    a frozen dataclass's ``__init__`` cost a visible share of one.
    """

    connection_id: int
    transaction: int
    info_hash: bytes
    peer_id: bytes
    downloaded: int
    left: int
    uploaded: int
    event: str
    ip: int
    key: int
    num_want: int
    port: int


@dataclass(frozen=True, slots=True)
class ScrapeRequest:
    connection_id: int
    transaction: int
    info_hashes: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class ConnectReply:
    transaction: int
    connection_id: int


@dataclass(frozen=True, slots=True)
class AnnounceReply:
    transaction: int
    interval: int
    leechers: int
    seeders: int
    peers: bytes


@dataclass(frozen=True, slots=True)
class ScrapeReply:
    transaction: int
    files: tuple[tuple[int, int, int], ...]


@dataclass(frozen=True, slots=True)
class ErrorReply:
    transaction: int
    message: str


Request = Union[ConnectRequest, UDPAnnounce, ScrapeRequest]
Reply = Union[ConnectReply, AnnounceReply, ScrapeReply, ErrorReply]


# ------------------------------------------------------------------ tracker side

def parse_request(data: bytes) -> Request:
    """Decode a request datagram; :class:`UDPCodecError` if it is none.

    ``UDPCodecError.transaction`` is set once the header could be read, so
    the tracker can address an error reply.
    """
    if len(data) < 16:
        raise UDPCodecError("datagram shorter than 16 bytes")
    connection_id, action, transaction = _HEAD.unpack_from(data)
    if action == CONNECT:
        if connection_id != PROTOCOL_ID:
            raise UDPCodecError("connect without the BEP 15 protocol id")
        return ConnectRequest(transaction)
    if action == ANNOUNCE:
        if len(data) < _ANNOUNCE.size:
            raise UDPCodecError(f"announce of {len(data)} bytes (needs 98)", transaction)
        (_, _, _, info_hash, peer_id, downloaded, left, uploaded, event, ip, key, num_want,
         port) = _ANNOUNCE.unpack_from(data)
        name = EVENTS.get(event)
        if name is None:
            raise UDPCodecError(f"invalid event {event}", transaction)
        # BEP 41 options may follow; none is needed here, so they are skipped.
        return UDPAnnounce(connection_id, transaction, info_hash, peer_id, downloaded, left,
                           uploaded, name, ip, key, num_want, port)
    if action == SCRAPE:
        body = data[16:]
        if not body or len(body) % 20:
            raise UDPCodecError("scrape needs whole 20-byte info hashes", transaction)
        if len(body) > 20 * MAX_SCRAPE:
            raise UDPCodecError(f"more than {MAX_SCRAPE} info hashes", transaction)
        hashes = tuple(body[i:i + 20] for i in range(0, len(body), 20))
        return ScrapeRequest(connection_id, transaction, hashes)
    raise UDPCodecError(f"unknown action {action}", transaction)


AnnounceFields = tuple[int, int, int, bytes, bytes, int, int, int, int, int, bytes, int, int]


def unpack_announce(data: bytes) -> AnnounceFields:
    """An announce's raw fields, for the tracker's hot path; ``data`` must be one.

    ``(connection_id, action, transaction, info_hash, peer_id, downloaded,
    left, uploaded, event, ip, key, num_want, port)``, with ``event`` still a
    number (see :data:`EVENTS`) and ``key`` as 4 bytes.  The caller checks
    ``len(data) >= ANNOUNCE_SIZE`` and ``data[8:12] == ANNOUNCE_ACTION``
    first.  :func:`parse_request` builds a :class:`UDPAnnounce` instead;
    that object was a measured share of a UDP announce (bench/README.md).
    """
    fields: AnnounceFields = ANNOUNCE_FIELDS.unpack_from(data)
    return fields


def connect_reply(transaction: int, connection_id: int) -> bytes:
    return _CONNECT_REPLY.pack(CONNECT, transaction, connection_id)


def announce_reply(transaction: int, interval: int, leechers: int, seeders: int,
                   peers: bytes) -> bytes:
    """``peers``: the compact form, 6 bytes per IPv4 peer or 18 per IPv6 peer."""
    # Counts are bounded by the store's caps and the interval by its option,
    # far below 2**32: no clamping on the hot path.
    return _ANNOUNCE_REPLY.pack(ANNOUNCE, transaction, interval, leechers, seeders) + peers


def scrape_reply(transaction: int, files: list[tuple[int, int, int]]) -> bytes:
    """``files``: ``(seeders, completed, leechers)`` per requested hash, in order."""
    return _REPLY_HEAD.pack(SCRAPE, transaction) + b"".join(
        _SCRAPE_ENTRY.pack(_u32(s), _u32(c), _u32(leech)) for s, c, leech in files)


def error_reply(transaction: int, message: str) -> bytes:
    return _REPLY_HEAD.pack(ERROR, transaction) + message.encode("utf-8", "replace")[:200]


def ip_from_int(value: int) -> str:
    """The dotted form of BEP 15's 32-bit ``ip`` field."""
    return str(ipaddress.IPv4Address(value))


def _u32(value: int) -> int:
    return max(0, min(value, 0xFFFFFFFF))


# --------------------------------------------------------------------- peer side

def connect_request(transaction: int) -> bytes:
    return _HEAD.pack(PROTOCOL_ID, CONNECT, transaction)


def announce_request(connection_id: int, transaction: int, info_hash: bytes, peer_id: bytes,
                     downloaded: int, left: int, uploaded: int, event: str, key: int,
                     num_want: int, port: int, ip: int = 0) -> bytes:
    return _ANNOUNCE.pack(connection_id, ANNOUNCE, transaction, info_hash, peer_id,
                          downloaded, left, uploaded, EVENT_NUMBERS[event or ""], ip, key,
                          num_want, port)


def scrape_request(connection_id: int, transaction: int, info_hashes: list[bytes]) -> bytes:
    return _HEAD.pack(connection_id, SCRAPE, transaction) + b"".join(info_hashes)


def parse_reply(data: bytes) -> Reply:
    """Decode a tracker's reply datagram; :class:`UDPCodecError` if it is none."""
    if len(data) < 8:
        raise UDPCodecError("reply shorter than 8 bytes")
    action, transaction = _REPLY_HEAD.unpack_from(data)
    if action == CONNECT:
        if len(data) < 16:
            raise UDPCodecError("connect reply shorter than 16 bytes", transaction)
        return ConnectReply(transaction, _CONNECT_REPLY.unpack_from(data)[2])
    if action == ANNOUNCE:
        if len(data) < 20:
            raise UDPCodecError("announce reply shorter than 20 bytes", transaction)
        _, _, interval, leechers, seeders = _ANNOUNCE_REPLY.unpack_from(data)
        return AnnounceReply(transaction, interval, leechers, seeders, data[20:])
    if action == SCRAPE:
        body = data[8:]
        if len(body) % 12:
            raise UDPCodecError("scrape reply not made of 12-byte entries", transaction)
        return ScrapeReply(transaction, tuple(_SCRAPE_ENTRY.unpack_from(body, i)
                                              for i in range(0, len(body), 12)))
    if action == ERROR:
        return ErrorReply(transaction, data[8:].decode("utf-8", "replace"))
    raise UDPCodecError(f"unknown action {action}", transaction)
