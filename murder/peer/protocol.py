"""One peer-wire connection: handshake, framing, flow control.

The protocol parses bytes (via :mod:`murder.peer.wire`) and hands each message
to the :class:`~murder.peer.session.Swarm`, which decides.  Its states are
explicit: ``HANDSHAKE`` → ``ACTIVE`` → ``CLOSED``.  Any protocol violation, or
any unexpected exception while handling a message, drops this connection with
a log line; nothing escapes ``dataReceived``.

Uploads go through a per-connection queue drained as an ``IPushProducer``:
the transport pauses us when its buffer is full, so memory stays bounded and
CANCEL still works on queued blocks.
"""

from __future__ import annotations

import enum
import socket
from collections import deque
from typing import TYPE_CHECKING

from twisted.internet import protocol
from twisted.logger import Logger
from zope.interface import implementer
from twisted.internet.interfaces import IPushProducer

from murder.errors import ProtocolError
from murder.peer import wire
from murder.peer.wire import Bitfield

if TYPE_CHECKING:
    from murder.peer.session import Swarm


class State(enum.Enum):
    HANDSHAKE = "handshake"
    ACTIVE = "active"
    CLOSED = "closed"


@implementer(IPushProducer)
class PeerProtocol(protocol.Protocol):
    """A connection to one remote peer of one torrent."""

    log = Logger()

    def __init__(self, swarm: "Swarm", outgoing: bool, address: tuple[str, int] | None = None
                 ) -> None:
        self.swarm = swarm
        self.outgoing = outgoing
        self.address = address
        self.state = State.HANDSHAKE
        self.peer_id: bytes | None = None
        self.fast = False
        self.reader: wire.MessageReader | None = None
        self._handshake_buffer = b""
        # Choke/interest state, both directions (BEP 3 starts choked, uninterested).
        self.am_choking = True
        self.am_interested = False
        self.peer_choking = True
        self.peer_interested = False
        self.bits = Bitfield(swarm.meta.num_pieces)
        self.outstanding: dict[tuple[int, int, int], float] = {}
        self.rejected: dict[int, float] = {}
        self.upload_queue: deque[tuple[int, int, int]] = deque()
        self._paused = False
        self.downloaded = 0
        self.uploaded = 0
        self.last_received = 0.0
        self.last_block = 0.0
        self.rate = 0.0
        self._rate_mark = 0
        self.strikes = 0
        self.seed_refused: dict[int, float] = {}
        self.turn_piece: int | None = None
        #: Requests given up on (snubbed) whose blocks are still welcome.
        self.withdrawn: set[tuple[int, int, int]] = set()
        #: 16 KiB blocks merged into one request to this peer (see
        #: ``SwarmConfig.request_size``); 1 for standard clients.
        self.span = 1
        #: Our requests went unanswered (see ``Swarm._snub``): one probe
        #: request at a time until a block arrives.
        self.snubbed = False
        #: The peer promises keep-alives while our requests wait for its
        #: upload turns, so total silence means it is wedged.
        self.keepalives = False
        self.last_keepalive = 0.0
        #: When the transport last paused us (the peer's socket is full), or None.
        self.paused_since: float | None = None

    @property
    def active(self) -> bool:
        """Handshake done and not closed: the connection carries messages."""
        return self.state is State.ACTIVE

    # ------------------------------------------------------------ connection
    def connectionMade(self) -> None:  # noqa: N802
        if self.address is None:
            peer = self.transport.getPeer()
            self.address = (peer.host, peer.port)
        self.last_received = self.swarm.clock.seconds()
        # Fewer, larger reads: 256 KiB per recv instead of Twisted's 64 KiB.
        if hasattr(self.transport, "bufferSize"):
            self.transport.bufferSize = 2**18
        if self.swarm.config.upload_slots and self.swarm.config.send_buffer:
            self._small_send_buffer(self.swarm.config.send_buffer)
        self.transport.registerProducer(self, True)
        if self.outgoing:
            self._send_handshake()

    def _small_send_buffer(self, size: int) -> None:
        """Bound what the kernel holds for this peer, so upload turns stay turns."""
        handle = getattr(self.transport, "getHandle", None)
        sock = handle() if handle else None
        if sock is not None and hasattr(sock, "setsockopt"):
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
            except OSError:
                pass

    def _send_handshake(self) -> None:
        self.transport.write(wire.handshake(self.swarm.meta.info_hash, self.swarm.peer_id,
                                            fast=self.swarm.fast))

    def connectionLost(self, reason=None) -> None:  # noqa: N802
        was_active = self.state is State.ACTIVE
        self.state = State.CLOSED
        self.upload_queue.clear()
        if was_active:
            self.swarm.connection_lost(self)
        else:
            self.swarm.connection_failed(self)

    def drop(self, why: str) -> None:
        """Close this connection, logging why."""
        if self.state is not State.CLOSED:
            self.log.debug("dropping {address}: {why}", address=self.address, why=why)
            self.transport.loseConnection()

    # ------------------------------------------------------------- receiving
    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        if self.state is State.CLOSED:
            return
        try:
            self.last_received = self.swarm.clock.seconds()
            if self.state is State.HANDSHAKE:
                data = self._handshake(data)
                if data is None:
                    return
            for message in self.reader.feed(data):  # type: ignore[union-attr]
                if self.state is State.CLOSED:
                    return
                self._dispatch(message)
        except ProtocolError as e:
            self.drop(e.reason)
            self.swarm.misbehaved(self, e.reason)
        except Exception:
            self.log.failure("unexpected error handling data from {address}",
                             address=self.address)
            self.drop("internal error")

    def _handshake(self, data: bytes) -> bytes | None:
        buf = self._handshake_buffer + data
        if len(buf) < 1:
            return None
        if buf[0] != len(wire.PSTR):
            raise ProtocolError("not a BitTorrent handshake")
        if len(buf) < wire.HANDSHAKE_LENGTH:
            self._handshake_buffer = buf
            if len(buf) >= 20 and buf[1:20] != wire.PSTR:
                raise ProtocolError("not a BitTorrent handshake")
            return None
        reserved, info_hash, peer_id = wire.parse_handshake(buf[:wire.HANDSHAKE_LENGTH])
        self._handshake_buffer = b""
        if info_hash != self.swarm.meta.info_hash:
            raise ProtocolError("handshake for another torrent")
        self.peer_id = peer_id
        refusal = self.swarm.accept_handshake(self)
        if refusal:
            if not self.outgoing and peer_id == self.swarm.peer_id:
                # Answer our own dial so that side learns the address is us.
                self._send_handshake()
            self.drop(refusal)
            return None
        if not self.outgoing:
            self._send_handshake()
        self.fast = wire.supports_fast(reserved) and self.swarm.fast
        meta = self.swarm.meta
        self.reader = wire.MessageReader(meta.num_pieces, meta.piece_length,
                                         meta.total_length, fast=self.fast)
        self.state = State.ACTIVE
        self.swarm.connection_ready(self)
        return buf[wire.HANDSHAKE_LENGTH:]

    def _dispatch(self, message: tuple) -> None:
        msg_id, a, b, c = message
        swarm = self.swarm
        if msg_id == wire.PIECE:
            self.downloaded += len(c)
            swarm.got_block(self, a, b, c)
        elif msg_id == wire.HAVE:
            if self.bits.add(a):
                swarm.got_have(self, a)
        elif msg_id == wire.REQUEST:
            self._got_request(a, b, c)
        elif msg_id == wire.CANCEL:
            try:
                self.upload_queue.remove((a, b, c))
            except ValueError:
                pass
            if not self.upload_queue:
                swarm.upload_turn_over(self)
        elif msg_id == wire.UNCHOKE:
            self.peer_choking = False
            swarm.fill_requests(self)
        elif msg_id == wire.CHOKE:
            self.peer_choking = True
            if not self.fast:
                swarm.requests_dropped(self, list(self.outstanding))
        elif msg_id == wire.INTERESTED:
            self.peer_interested = True
            swarm.choker_update(self)
        elif msg_id == wire.NOT_INTERESTED:
            self.peer_interested = False
            swarm.choker_update(self)
        elif msg_id == wire.BITFIELD:
            self._got_bits(Bitfield.from_bytes(swarm.meta.num_pieces, a))
        elif msg_id == wire.HAVE_ALL:
            self._got_bits(Bitfield(swarm.meta.num_pieces, full=True))
        elif msg_id == wire.HAVE_NONE:
            self._got_bits(Bitfield(swarm.meta.num_pieces))
        elif msg_id == wire.REJECT:
            block = (a, b, c)
            if block in self.outstanding:
                self.rejected[a] = swarm.clock.seconds()
                swarm.requests_dropped(self, [block])
                swarm.fill_requests(self)
        # keep-alive, ALLOWED_FAST, SUGGEST, PORT, extensions: nothing to do.

    def _got_bits(self, bits: Bitfield) -> None:
        if self.bits.count:
            # aria2 1.36 sends a BITFIELD after HAVE messages (BEP 3 says
            # first only).  Take it as a batch of HAVEs if it only adds pieces.
            if any(i not in bits for i in self.bits):
                raise ProtocolError("bitfield after have messages drops pieces")
            for index in bits:
                if self.bits.add(index):
                    self.swarm.got_have(self, index)
            return
        self.bits = bits
        self.swarm.got_bitfield(self)

    def _got_request(self, index: int, begin: int, length: int) -> None:
        if self.am_choking or index not in self.swarm.have:
            if self.fast:
                self.transport.write(wire.reject(index, begin, length))
            return
        if len(self.upload_queue) >= self.swarm.max_queued_requests:
            raise ProtocolError("too many queued requests")
        verdict = self.swarm.allow_request(self, index)
        if not verdict:
            if self.fast:
                self.transport.write(wire.reject(index, begin, length))
            return
        self.upload_queue.append((index, begin, length))
        if not self._paused:
            self.swarm.upload_ready(self)

    # --------------------------------------------------------------- sending
    def pump(self) -> None:
        """Send queued blocks until the transport pauses us or our turn ends.

        With limited upload slots a turn is one piece: when the next queued
        block belongs to another piece and other peers wait, the turn passes.
        """
        swarm = self.swarm
        queue = self.upload_queue
        limited = bool(swarm.config.upload_slots)
        while queue and not self._paused and self.state is State.ACTIVE:
            if not swarm.upload_allowed(self):
                return
            index, begin, length = queue[0]
            if limited:
                if self.turn_piece is None:
                    self.turn_piece = index
                elif index != self.turn_piece and swarm.others_waiting():
                    swarm.upload_turn_over(self)
                    return
            queue.popleft()
            block = swarm.read_block(index, begin, length)
            if block is None:
                self.drop("cannot read our own payload")
                return
            self.transport.writeSequence((wire.piece_header(index, begin, length), block))
            self.uploaded += length
            swarm.uploaded_block(self, index, length)
        if limited and not queue and self.state is State.ACTIVE:
            swarm.upload_turn_over(self)

    def pauseProducing(self) -> None:  # noqa: N802
        self._paused = True
        self.paused_since = self.swarm.clock.seconds()

    def resumeProducing(self) -> None:  # noqa: N802
        self._paused = False
        self.paused_since = None
        if self.state is State.ACTIVE and self.upload_queue:
            try:
                self.swarm.upload_ready(self)
            except Exception:
                self.log.failure("upload to {address} failed", address=self.address)
                self.drop("internal error")

    def stopProducing(self) -> None:  # noqa: N802
        self.upload_queue.clear()

    def send(self, data: bytes) -> None:
        if self.state is State.ACTIVE:
            self.transport.write(data)

    def set_choking(self, choking: bool) -> None:
        if choking == self.am_choking:
            return
        self.am_choking = choking
        if choking:
            if self.fast:
                for block in self.upload_queue:
                    self.send(wire.reject(*block))
            self.upload_queue.clear()
            self.swarm.upload_turn_over(self)
            self.send(wire.simple(wire.CHOKE))
        else:
            self.send(wire.simple(wire.UNCHOKE))

    def set_interested(self, interested: bool) -> None:
        if interested != self.am_interested:
            self.am_interested = interested
            self.send(wire.simple(wire.INTERESTED if interested else wire.NOT_INTERESTED))


class PeerFactory(protocol.Factory):
    """Accepts incoming connections for a swarm."""

    noisy = False

    def __init__(self, swarm: "Swarm") -> None:
        self.swarm = swarm

    def buildProtocol(self, addr) -> PeerProtocol | None:  # noqa: N802
        if not self.swarm.accepting():
            return None
        return PeerProtocol(self.swarm, outgoing=False, address=(addr.host, addr.port))


class OutgoingFactory(protocol.ClientFactory):
    """Dials one peer returned by the tracker."""

    noisy = False

    def __init__(self, swarm: "Swarm", address: tuple[str, int]) -> None:
        self.swarm = swarm
        self.address = address

    def buildProtocol(self, addr) -> PeerProtocol:  # noqa: N802
        return PeerProtocol(self.swarm, outgoing=True, address=self.address)

    def clientConnectionFailed(self, connector, reason) -> None:  # noqa: N802
        self.swarm.dial_failed(self.address, reason.getErrorMessage())
