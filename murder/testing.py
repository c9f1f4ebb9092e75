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
- :class:`MemoryNetwork`: swarm cores joined by :class:`MemoryLink` objects
  (the :class:`~murder.peer.interfaces.PeerLink` contract without bytes or
  protocols): messages are queued as calls on the other core and delivered
  by :meth:`MemoryNetwork.flush`; its :meth:`~MemoryNetwork.dialer` dials by
  address.  Many cores run in one process this way.
- :class:`FakeTrackerHTTP`: the announce client a run uses, answered in memory.
- :func:`pattern`: deterministic, non-repeating payload bytes.
- :class:`ManualPool` / :class:`InlineReactor`: the slice of a ``ThreadPool``
  and of a reactor that :class:`~murder.peer.storage.PieceWriter` uses, run on
  the test's thread when the test says so.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Any, Mapping, Union, cast

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.test import iosim

from murder import bencode, metainfo
from murder.errors import StorageError
from murder.metainfo import Metainfo
from murder.peer.config import SwarmConfig
from murder.peer.interfaces import Peer
from murder.peer.picker import Picker
from murder.peer.ratelimit import RateLimiter
from murder.peer.uploads import Uploads
from murder.peer.wire import BLOCK_SIZE, Bitfield
from murder.tracker import udpcodec

def pattern(n: int, seed: int | str = 0) -> bytes:
    """``n`` deterministic bytes that never repeat within a payload, so a
    block written at the wrong offset or from the wrong piece is caught."""
    out = bytearray()
    i = 0
    while len(out) < n:
        out += hashlib.sha256(f"{seed}/{i}".encode()).digest()
        i += 1
    return bytes(out[:n])


class ManualPool:
    """Stands in for a ``ThreadPool``: keeps each job until :meth:`run_all`."""

    def __init__(self) -> None:
        self.calls: list = []

    def callInThreadWithCallback(self, on_result, f, *args, **kwargs):  # noqa: N802
        self.calls.append((on_result, f, args, kwargs))

    def run_all(self) -> int:
        """Run the kept jobs as a ThreadPool would report them; return how many."""
        calls, self.calls = self.calls, []
        for on_result, f, args, kwargs in calls:
            try:
                result = f(*args, **kwargs)
            except BaseException as e:  # noqa: BLE001 - as ThreadPool reports it
                on_result(False, e)
            else:
                on_result(True, result)
        return len(calls)


class InlineReactor:
    """``callFromThread`` runs at once: :class:`ManualPool` runs on the test's thread."""

    def callFromThread(self, f, *args, **kwargs):  # noqa: N802
        f(*args, **kwargs)


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

    A :class:`Swarm` uses ``seconds``/``callLater`` (from :class:`Clock`);
    a :class:`~murder.peer.protocol.TCPDialer` on this reactor calls
    ``connectTCP``, and dials are appended to :attr:`dials` for the test to
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
    def peer(self) -> Any:
        """The swarm's record of this connection (:class:`~murder.peer.interfaces.Peer`)."""
        return self.protocol.peer

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


class MemoryLink:
    """One end of an in-memory connection: a :class:`~murder.peer.interfaces.PeerLink`.

    Each ``send_*`` queues the matching event on the other end's core (in
    :attr:`MemoryNetwork.queue`); nothing is encoded.  ``pause_reading``
    holds deliveries to this end until ``resume_reading``.
    """

    def __init__(self, net: "MemoryNetwork", core: Any, address: tuple[str, int],
                 outgoing: bool) -> None:
        self.net = net
        self.core = core
        self.address = address
        self.outgoing = outgoing
        self.peer_id: bytes | None = None
        self.fast = False
        self.peer: Any = None
        self.remote: MemoryLink | None = None
        self.closed = False
        self.reading = True
        self.held: list[tuple[str, tuple[Any, ...]]] = []
        #: Every message sent, as (event name, args), for tests to read.
        self.sent: list[tuple[str, tuple[Any, ...]]] = []

    def _post(self, event: str, *args: Any) -> None:
        if self.closed or self.remote is None:
            return
        self.sent.append((event, args))
        self.net.queue.append((self.remote, event, args))

    def send_bitfield(self, bits: Any) -> None:
        self._post("got_bitfield", Bitfield.from_bytes(bits.length, bits.tobytes()))

    def send_have_all(self) -> None:
        from murder.peer.wire import Bitfield

        self._post("got_bitfield", Bitfield(self.core.meta.num_pieces, full=True))

    def send_have_none(self) -> None:
        from murder.peer.wire import Bitfield

        self._post("got_bitfield", Bitfield(self.core.meta.num_pieces))

    def send_have(self, index: int) -> None:
        self._post("got_have", index)

    def send_choke(self) -> None:
        self._post("got_choke")

    def send_unchoke(self) -> None:
        self._post("got_unchoke")

    def send_interested(self) -> None:
        self._post("got_interested")

    def send_not_interested(self) -> None:
        self._post("got_not_interested")

    def send_requests(self, blocks: list[tuple[int, int, int]]) -> None:
        for block in blocks:
            self._post("got_request", *block)

    def send_cancel(self, block: tuple[int, int, int]) -> None:
        self._post("got_cancel", *block)

    def send_reject(self, block: tuple[int, int, int]) -> None:
        self._post("got_reject", *block)

    def send_piece(self, index: int, begin: int, data: bytes) -> None:
        self._post("got_block", index, begin, bytes(data))

    def send_keepalive(self) -> None:
        self._post("heard_from")

    def drop(self, why: str) -> None:
        self.net.close(self)

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True
        held, self.held = self.held, []
        self.net.queue.extend((self, event, args) for event, args in held)


class MemoryNetwork:
    """Swarm cores joined in memory: listening addresses, links, a message queue.

    :meth:`listen` registers a core at an address; :meth:`dialer` gives a
    core the :class:`~murder.peer.interfaces.Dialer` to pass to its
    :class:`~murder.peer.session.Swarm`; :meth:`flush` delivers queued
    connects and messages in order until none is left (bounded).
    """

    def __init__(self) -> None:
        self.listeners: dict[tuple[str, int], Any] = {}
        self.addresses: dict[int, tuple[str, int]] = {}
        self.queue: list[tuple[Any, str, tuple[Any, ...]]] = []
        self.links: list[MemoryLink] = []

    def listen(self, core: Any, address: tuple[str, int]) -> None:
        self.listeners[address] = core
        self.addresses[id(core)] = address

    def dialer(self) -> "MemoryNetwork":
        return self

    def dial(self, core: Any, address: tuple[str, int]) -> None:
        """The :class:`~murder.peer.interfaces.Dialer` method: connect on the next flush."""
        self.queue.append((None, "_connect", (core, address)))

    def connect(self, dialing: Any, address: tuple[str, int]) -> MemoryLink | None:
        """Connect ``dialing`` to the core listening at ``address``; handshakes included."""
        accepting = self.listeners.get(address)
        if accepting is None or not accepting.accepting():
            dialing.dial_failed(address, "connection refused")
            return None
        mine = self.addresses.get(id(dialing), ("0.0.0.0", 0))
        out = MemoryLink(self, dialing, address, outgoing=True)
        inc = MemoryLink(self, accepting, mine, outgoing=False)
        out.remote, inc.remote = inc, out
        self.links += [out, inc]
        # The acceptor reads the dialer's handshake, answers, is ready; then the dialer.
        for link, remote_core in ((inc, dialing), (out, accepting)):
            link.peer_id = remote_core.peer_id
            link.fast = remote_core.fast and link.core.fast
            if link.core.accept_handshake(link) is not None:
                self.close(link)
                return None
            link.peer = link.core.connection_ready(link)
        return out

    def close(self, link: MemoryLink) -> None:
        for end in (link, link.remote):
            if end is None or end.closed:
                continue
            end.closed = True
            if end.peer is not None:
                end.core.connection_lost(end.peer)
            else:
                end.core.connection_failed(end)

    def flush(self, limit: int = 10_000_000) -> int:
        """Deliver until nothing is queued; return how many were delivered."""
        from murder.errors import ProtocolError

        done = 0
        while self.queue and done < limit:
            batch, self.queue = self.queue, []
            for target, event, args in batch:
                done += 1
                if target is None:
                    self.connect(*args)
                    continue
                if target.closed or target.peer is None:
                    continue
                if not target.reading:
                    target.held.append((event, args))
                    continue
                core = target.core
                try:
                    core.heard_from(target.peer)
                    if event != "heard_from":
                        getattr(core, event)(target.peer, *args)
                except ProtocolError as e:
                    target.drop(e.reason)
                    core.misbehaved(target, e.reason)
        if self.queue:
            raise AssertionError(f"network still busy after {limit} deliveries")
        return done


class RecordingLink:
    """A :class:`~murder.peer.interfaces.PeerLink` for upload tests: records
    ``(name, event, index, begin)`` for pieces sent (``"piece"``), chokes and
    unchokes (index and begin -1); every other send is a no-op.

    ``fill_socket_of``: set to a Peer whose socket fills (``send_paused``)
    after the next block sent, as a slow receiver's would.
    """

    def __init__(self, name: str, events: list[tuple[str, str, int, int]]) -> None:
        self.address = (name, 1)
        self.outgoing = False
        self.peer_id: bytes | None = name.encode().ljust(20, b"-")
        self.fast = True
        self.events = events
        self.fill_socket_of: Peer | None = None

    def send_piece(self, index: int, begin: int, data: bytes) -> None:
        self.events.append((self.address[0], "piece", index, begin))
        if self.fill_socket_of is not None:
            self.fill_socket_of.send_paused = True
            self.fill_socket_of = None

    def send_choke(self) -> None:
        self.events.append((self.address[0], "choke", -1, -1))

    def send_unchoke(self) -> None:
        self.events.append((self.address[0], "unchoke", -1, -1))

    def __getattr__(self, name: str) -> Any:
        return lambda *args: None


class Uploader:
    """An :class:`~murder.peer.uploads.Uploads` of a host holding every piece
    (``PIECES`` pieces of two 16 KiB blocks; ``held`` < ``PIECES``: only the
    first ``held``, a peer still downloading; ``own_id``: its peer id, from
    which ``poor_spread`` draws) on a Clock, and the peers that connect to
    it, say they are interested and queue requests."""

    PIECES = 8

    def __init__(self, config: SwarmConfig, held: int = PIECES, own_id: bytes = b"") -> None:
        self.block = BLOCK_SIZE
        plen = 2 * BLOCK_SIZE
        meta, data = build_torrent(pattern(self.PIECES * plen), piece_length=plen)
        # task.Clock is an interfaces.Clock at run time; its stubs spell callLater differently.
        self.clock: Any = cast(Any, Clock())
        self.picker = Picker(meta.num_pieces, piece_length=plen, total_length=meta.total_length)
        for i in range(held):
            self.picker.mark_have(i)
        limiter = RateLimiter(self.clock, 0, 0, resume_upload=lambda p: None)
        self.uploads = Uploads(self.clock, config, meta, self.picker, MemoryStorage(meta, data),
                               limiter, own_id)
        self.events: list[tuple[str, str, int, int]] = []

    def peer(self, name: str, holds: int = 0) -> Peer:
        """A peer connects and says it is interested; it has nothing, or
        ``holds`` pieces from the top down (pieces the tests' requests,
        from the bottom, do not ask for: what poorest-first turns count)."""
        from murder.peer.wire import Bitfield

        peer = Peer(RecordingLink(name, self.events), Bitfield(self.PIECES))
        for index in range(self.PIECES - holds, self.PIECES):
            peer.bits.add(index)
        peer.peer_interested = True
        self.uploads.update_choke(peer)
        return peer

    def ask(self, peer: Peer, *pieces: int) -> None:
        """``peer`` requests whole pieces, two 16 KiB blocks each (a standard client)."""
        for index in pieces:
            for begin in (0, self.block):
                self.uploads.got_request(peer, index, begin, self.block)

    def race(self, holder: Peer, first: int, asks: list[tuple[Peer, int]]) -> list[tuple[str, int]]:
        """``holder`` takes the upload slot asking for piece ``first`` and its
        socket fills after the first block; meanwhile each of ``asks`` asks
        for its piece, in that order; then the socket drains and the turns
        are served.  Returns :meth:`pieces`: whose turn came when."""
        holder.send_paused = True
        self.ask(holder, first)  # both blocks queued; the socket fills after the first
        holder.send_paused = False
        cast(Any, holder.link).fill_socket_of = holder
        self.uploads.ready(holder)
        for peer, index in asks:
            self.ask(peer, index)
        holder.send_paused = False
        self.uploads.ready(holder)
        return self.pieces()

    def sent(self) -> list[tuple[str, int, int]]:
        """``(name, index, begin)`` of every block sent, in order."""
        return [(name, index, begin) for name, what, index, begin in self.events
                if what == "piece"]

    def pieces(self) -> list[tuple[str, int]]:
        """Who was sent which piece (counted at its first block), in order."""
        return [(name, index) for name, index, begin in self.sent() if begin == 0]

    def unchoked(self) -> list[str]:
        return [name for name, what, _, _ in self.events if what == "unchoke"]


def fuzz_datagram(rng: random.Random, seeds: list[bytes], connection_id: int,
                  transaction: int, info_hash: bytes) -> bytes:
    """One datagram for a UDP tracker fuzz run: random bytes (a quarter),
    a mutated or truncated copy of one of ``seeds`` (valid requests), or an
    announce with a valid frame and hostile fields (wrong connection id,
    unknown torrent, any event, numwant, port or ``ip``)."""
    kind = rng.random()
    if kind < 0.25:
        return rng.randbytes(rng.randrange(0, 200))
    if kind < 0.85:
        raw = bytearray(rng.choice(seeds))
        for _ in range(rng.randrange(1, 6)):
            raw[rng.randrange(len(raw))] = rng.randrange(256)
        return bytes(raw[:rng.randrange(len(raw) + 1)] if rng.random() < 0.3 else raw)
    return udpcodec.announce_request(
        connection_id if rng.random() < 0.8 else rng.getrandbits(64), transaction,
        rng.randbytes(20) if rng.random() < 0.5 else info_hash, rng.randbytes(20),
        rng.getrandbits(64), rng.getrandbits(64), rng.getrandbits(64),
        rng.choice(["", "started", "completed", "stopped"]),
        rng.getrandbits(32), rng.randrange(-2**31, 2**31), rng.randrange(65536),
        ip=rng.getrandbits(32) if rng.random() < 0.3 else 0)
