"""Test doubles for Murder's peer/seeder code, shared by the test suite.

Each fake declares the slice of the real interface it stands in for, so tests
exercise the real :class:`~murder.peer.session.Swarm` and
:class:`~murder.peer.protocol.PeerProtocol` without sockets, threads or the
global reactor:

- :func:`build_torrent`: a valid :class:`~murder.metainfo.Metainfo` for a
  payload held in memory (single file or a directory tree), plus the payload
  bytes, without touching the disk.
- :class:`FakeReactor`: a :class:`~twisted.internet.task.Clock` that also
  records ``connectTCP`` calls (what :class:`Swarm` needs from a reactor).
- :class:`MemoryStorage`: the piece read/write API of
  :class:`~murder.peer.storage.PieceStorage` over a ``bytearray``, recording
  every write so tests can assert that hostile input never reached "disk".
- :func:`connect_swarms`: joins two swarms with one real ``PeerProtocol`` each
  over :mod:`twisted.test.iosim` and returns the pump.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Mapping, Union

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.test import iosim

from murder import bencode, metainfo
from murder.errors import StorageError
from murder.metainfo import Metainfo

#: ``bytes`` for a single-file payload, or ``{"dir/file": bytes}`` for a tree.
PayloadSpec = Union[bytes, Mapping[str, bytes]]


def build_torrent(spec: PayloadSpec, *, name: str = "payload", piece_length: int = 2**15,
                  announce: str | None = "http://tracker.test/announce",
                  announce_list: list[list[str]] | None = None) -> tuple[Metainfo, bytes]:
    """Return ``(meta, payload)`` for an in-memory payload.

    For a tree, files are laid out in the mapping's order (which is how the
    bytes are concatenated into ``payload``), so tests can place file
    boundaries exactly where they want them, e.g. inside a 16 KiB block.
    """
    if isinstance(spec, (bytes, bytearray)):
        payload = bytes(spec)
        info: dict[bytes, Any] = {b"length": len(payload)}
    else:
        payload = b"".join(spec.values())
        info = {b"files": [
            {b"length": len(data), b"path": [p.encode() for p in rel.split("/")]}
            for rel, data in spec.items()
        ]}
    info[b"name"] = name.encode()
    info[b"piece length"] = piece_length
    info[b"pieces"] = b"".join(
        hashlib.sha1(payload[i:i + piece_length]).digest()
        for i in range(0, max(len(payload), 1), piece_length)
    )
    top: dict[bytes, Any] = {b"info": info}
    if announce is not None:
        top[b"announce"] = announce.encode()
    if announce_list:
        top[b"announce-list"] = [[u.encode() for u in tier] for tier in announce_list]
    return metainfo.parse(bencode.encode(top)), payload


@dataclass
class TCPDial:
    """One recorded ``connectTCP`` call."""

    host: str
    port: int
    factory: Any
    timeout: float


class FakeConnector:
    """What ``connectTCP`` returns; only ``stopConnecting``/``disconnect`` are used."""

    def __init__(self) -> None:
        self.stopped = False

    def stopConnecting(self) -> None:  # noqa: N802 (Twisted API)
        self.stopped = True

    disconnect = stopConnecting


class FakeReactor(Clock):
    """A Clock that records outgoing TCP dials instead of making them.

    :class:`Swarm` uses ``seconds``/``callLater`` (from :class:`Clock`) and
    ``connectTCP``; dials are appended to :attr:`dials` for the test to
    inspect or complete (e.g. with :func:`connect_swarms`).
    """

    def __init__(self) -> None:
        super().__init__()
        self.dials: list[TCPDial] = []

    def connectTCP(self, host: str, port: int, factory: Any, timeout: float = 30,  # noqa: N802
                   bindAddress: Any = None) -> FakeConnector:  # noqa: N803
        self.dials.append(TCPDial(host, port, factory, timeout))
        return FakeConnector()


class MemoryStorage:
    """In-memory stand-in for :class:`~murder.peer.storage.PieceStorage`.

    ``data`` is the whole payload (a seeder) or ``None`` for an empty
    download.  Every :meth:`write_piece` is recorded in :attr:`writes`.
    Set :attr:`fail_writes` to a :class:`StorageError` to simulate a disk
    failure.
    """

    def __init__(self, meta: Metainfo, data: bytes | None = None) -> None:
        self.meta = meta
        self.buffer = bytearray(data if data is not None else bytes(meta.total_length))
        self.writes: list[int] = []
        self.fail_writes: StorageError | None = None
        self.closed = False

    def read(self, offset: int, length: int) -> bytes:
        if offset + length > len(self.buffer):
            raise StorageError("<memory>", "read beyond the payload")
        return bytes(self.buffer[offset:offset + length])

    def read_block(self, index: int, begin: int, length: int) -> bytes:
        return self.read(index * self.meta.piece_length + begin, length)

    def read_piece(self, index: int) -> bytes:
        return self.read(index * self.meta.piece_length, self.meta.piece_size(index))

    def write_piece(self, index: int, data: bytes | bytearray | memoryview) -> None:
        if self.fail_writes is not None:
            raise self.fail_writes
        offset = index * self.meta.piece_length
        self.buffer[offset:offset + len(data)] = data
        self.writes.append(index)

    def check_piece(self, index: int) -> bool:
        return hashlib.sha1(self.read_piece(index)).digest() == self.meta.pieces[index]

    def close(self) -> None:
        self.closed = True


def connect_swarms(server: Any, client: Any, *, clock: Clock | None = None,
                   server_address: tuple[str, int] = ("10.0.0.1", 6881),
                   client_address: tuple[str, int] = ("10.0.0.2", 50000),
                   greet: bool = True) -> tuple[Any, Any, iosim.IOPump]:
    """Connect ``client`` (dialing) to ``server`` (accepting) in memory.

    Returns ``(server_protocol, client_protocol, pump)``; call
    ``pump.flush()`` to move bytes until both sides are quiet.  ``greet``
    flushes once so the handshakes are done on return.
    """
    from murder.peer.protocol import PeerProtocol

    server_proto = PeerProtocol(server, outgoing=False, address=client_address)
    client_proto = PeerProtocol(client, outgoing=True, address=server_address)
    s_addr = IPv4Address("TCP", *server_address)
    c_addr = IPv4Address("TCP", *client_address)
    server_tr = iosim.FakeTransport(server_proto, isServer=True, hostAddress=s_addr,
                                    peerAddress=c_addr)
    client_tr = iosim.FakeTransport(client_proto, isServer=False, hostAddress=c_addr,
                                    peerAddress=s_addr)
    pump = iosim.connect(server_proto, server_tr, client_proto, client_tr, greet=greet,
                         clock=clock)
    return server_proto, client_proto, pump


class RemotePeer:
    """One connection of a swarm driven by hand, through a ``StringTransport``.

    The test plays the remote side: :meth:`send` feeds wire bytes to the
    swarm's real :class:`~murder.peer.protocol.PeerProtocol`, :meth:`sent`
    returns (and clears) what the swarm wrote back, parsed into messages.
    Construction performs the handshake (the remote dials in).
    """

    def __init__(self, swarm: Any, peer_id: bytes, *, fast: bool = True,
                 address: tuple[str, int] = ("10.0.0.9", 40000)) -> None:
        from twisted.internet.testing import StringTransport

        from murder.peer import wire
        from murder.peer.protocol import PeerProtocol

        self.swarm = swarm
        self.peer_id = peer_id
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", *address))
        self.protocol = PeerProtocol(swarm, outgoing=False, address=address)
        self.protocol.makeConnection(self.transport)
        meta = swarm.meta
        self._reader = wire.MessageReader(meta.num_pieces, meta.piece_length,
                                          meta.total_length, fast=True)
        self._greeted = False
        self.send(wire.handshake(meta.info_hash, peer_id, fast=fast))

    def send(self, data: bytes) -> None:
        """Deliver bytes from the remote to the swarm's protocol."""
        self.protocol.dataReceived(data)

    def sent(self) -> list[tuple]:
        """Messages the swarm wrote since the last call (handshake excluded)."""
        from murder.peer import wire

        data = self.transport.value()
        self.transport.clear()
        if not self._greeted and len(data) >= wire.HANDSHAKE_LENGTH:
            data = data[wire.HANDSHAKE_LENGTH:]
            self._greeted = True
        return self._reader.feed(data)

    @property
    def closed(self) -> bool:
        """True once the swarm asked to close this connection."""
        return bool(self.transport.disconnecting)

    def lose(self) -> None:
        """Report the connection lost to the protocol (StringTransport never does)."""
        from twisted.internet.error import ConnectionDone
        from twisted.python.failure import Failure

        self.protocol.connectionLost(Failure(ConnectionDone()))


class FakeTrackerHTTP:
    """The announce client a :class:`~murder.peer.run.SwarmRun` uses, answered in memory.

    Offers the two calls :class:`~murder.peer.announcer.Announcer` makes
    (``get(url, timeout=)`` and ``content(response)``).  Every URL asked is
    kept in :attr:`urls`; the answer is a bencoded reply with the current
    :attr:`peers` (compact), :attr:`complete` and :attr:`incomplete` counts,
    or, while :attr:`failure` is set, that exception.
    """

    class Response:
        code = 200

        def __init__(self, body: bytes) -> None:
            self.body = body

    def __init__(self, interval: int = 15) -> None:
        self.interval = interval
        self.urls: list[str] = []
        self.peers: bytes = b""
        self.complete = 1
        self.incomplete = 0
        self.failure: Exception | None = None

    def events(self) -> list[str | None]:
        """The ``event=`` of each announce so far (None: a regular update)."""
        from urllib.parse import parse_qs, urlsplit

        return [parse_qs(urlsplit(u).query).get("event", [None])[0] for u in self.urls]

    def get(self, url: str, timeout: float = 10.0) -> Any:
        from twisted.internet import defer

        self.urls.append(url)
        if self.failure is not None:
            return defer.fail(self.failure)
        from murder import bencode

        body = bencode.encode({b"interval": self.interval, b"peers": self.peers,
                               b"complete": self.complete, b"incomplete": self.incomplete})
        return defer.succeed(self.Response(body))

    @staticmethod
    def content(response: Any) -> Any:
        from twisted.internet import defer

        return defer.succeed(response.body)
