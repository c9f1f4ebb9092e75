"""One peer-wire connection over TCP: handshake, framing, flow control.

:class:`PeerProtocol` is the production :class:`~murder.peer.interfaces.PeerLink`:
it parses bytes (via :mod:`murder.peer.wire`) and reports each message to
the core (:class:`~murder.peer.interfaces.SwarmEvents`), which decides; the
core's sends come back as ``send_*`` calls that it encodes.  Its states are
explicit: ``HANDSHAKE`` → ``ACTIVE`` → ``CLOSED``.  Any protocol violation,
or any unexpected exception while handling a message, drops this connection
with a log line; nothing escapes ``dataReceived``.

Uploads are paced by the transport: the protocol is its ``IPushProducer``,
and a pause or resume is reported to the core, which owns the upload queue.
:class:`TCPDialer` and :class:`PeerFactory` connect cores over TCP.
"""

from __future__ import annotations

import enum
import socket
from typing import Any

from twisted.internet import protocol
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from zope.interface import implementer

from murder.errors import ProtocolError
from murder.peer import wire
from murder.peer.interfaces import Address, Block, Peer, SwarmEvents
from murder.peer.wire import Bitfield


class State(enum.Enum):
    HANDSHAKE = "handshake"
    ACTIVE = "active"
    CLOSED = "closed"


_HAVE_ALL = wire.simple(wire.HAVE_ALL)
_HAVE_NONE = wire.simple(wire.HAVE_NONE)
_CHOKE = wire.simple(wire.CHOKE)
_UNCHOKE = wire.simple(wire.UNCHOKE)
_INTERESTED = wire.simple(wire.INTERESTED)
_NOT_INTERESTED = wire.simple(wire.NOT_INTERESTED)


@implementer(IPushProducer)
class PeerProtocol(protocol.Protocol):
    """A connection to one remote peer of one torrent."""

    log = Logger()

    def __init__(self, core: SwarmEvents, outgoing: bool, address: Address | None = None,
                 send_buffer: int = 0) -> None:
        self.core = core
        self.outgoing = outgoing
        #: As dialed or accepted; else read from the transport once connected.
        self.address: Address = address if address is not None else ("", 0)
        self._address_known = address is not None
        self.state = State.HANDSHAKE
        self.peer_id: bytes | None = None
        self.fast = False
        #: The core's record of this peer, once the handshake is accepted.
        self.peer: Peer | None = None
        self.reader: wire.MessageReader | None = None
        self._handshake_buffer = b""
        #: Set by :meth:`drop`: the close is under way, and nothing more that
        #: arrives is handed to the core (it has forgotten this peer, and
        #: requests made for it now would be held by no one).
        self._dropped = False
        #: Kernel send buffer to ask for (0: the system's): small with upload
        #: turns, so a turn's data has left before the next turn starts.
        self._send_buffer = send_buffer

    @property
    def active(self) -> bool:
        """Handshake done and not closed: the connection carries messages."""
        return self.state is State.ACTIVE

    # ------------------------------------------------------------ connection
    def connectionMade(self) -> None:  # noqa: N802
        transport: Any = self.transport
        if not self._address_known:
            peer = transport.getPeer()
            self.address = (peer.host, peer.port)
        # Fewer, larger reads: 256 KiB per recv instead of Twisted's 64 KiB.
        if hasattr(transport, "bufferSize"):
            transport.bufferSize = 2**18
        if self._send_buffer:
            self._small_send_buffer(self._send_buffer)
        self.transport.registerProducer(self, True)  # type: ignore[union-attr]
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
        core = self.core
        self._write(wire.handshake(core.meta.info_hash, core.peer_id, fast=core.fast))

    def connectionLost(self, reason: Any = None) -> None:  # noqa: N802
        was_active = self.state is State.ACTIVE
        self.state = State.CLOSED
        if was_active and self.peer is not None:
            self.core.connection_lost(self.peer)
        else:
            self.core.connection_failed(self)

    def drop(self, why: str) -> None:
        """Close this connection, logging why."""
        self._dropped = True
        if self.state is not State.CLOSED:
            self.log.debug("dropping {address}: {why}", address=self.address, why=why)
            self.transport.loseConnection()  # type: ignore[union-attr]

    def pause_reading(self) -> None:
        self.transport.pauseProducing()  # type: ignore[union-attr]

    def resume_reading(self) -> None:
        self.transport.resumeProducing()  # type: ignore[union-attr]

    # ------------------------------------------------------------- receiving
    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        if self.state is State.CLOSED or self._dropped:
            return
        try:
            if self.state is State.HANDSHAKE:
                rest = self._handshake(data)
                if rest is None:
                    return
                data = rest
            assert self.peer is not None and self.reader is not None
            self.core.heard_from(self.peer)
            for message in self.reader.feed(data):
                if self.state is State.CLOSED or self._dropped:
                    return
                self._dispatch(message)
        except Exception as e:
            self.receive_failed(e)

    def receive_failed(self, error: Exception) -> None:
        """What arrived could not be handled; call from the ``except`` block.

        A :class:`ProtocolError` is the peer's fault: drop it as misbehaving.
        Anything else is our bug: logged with its traceback, and the
        connection dropped so one bad exchange cannot wedge the swarm.
        """
        if isinstance(error, ProtocolError):
            self.drop(error.reason)
            self.core.misbehaved(self, error.reason)
            return
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
        core = self.core
        if info_hash != core.meta.info_hash:
            raise ProtocolError("handshake for another torrent")
        self.peer_id = peer_id
        self.fast = wire.supports_fast(reserved) and core.fast
        refusal = core.accept_handshake(self)
        if refusal:
            if not self.outgoing and peer_id == core.peer_id:
                # Answer our own dial so that side learns the address is us.
                self._send_handshake()
            self.drop(refusal)
            return None
        if not self.outgoing:
            self._send_handshake()
        meta = core.meta
        self.reader = wire.MessageReader(meta.num_pieces, meta.piece_length,
                                         meta.total_length, fast=self.fast)
        self.state = State.ACTIVE
        self.peer = core.connection_ready(self)
        return buf[wire.HANDSHAKE_LENGTH:]

    def _dispatch(self, message: tuple[Any, ...]) -> None:
        msg_id, a, b, c = message
        core, peer = self.core, self.peer
        assert peer is not None
        if msg_id == wire.PIECE:
            core.got_block(peer, a, b, c)
        elif msg_id == wire.HAVE:
            core.got_have(peer, a)
        elif msg_id == wire.REQUEST:
            core.got_request(peer, a, b, c)
        elif msg_id == wire.CANCEL:
            core.got_cancel(peer, a, b, c)
        elif msg_id == wire.UNCHOKE:
            core.got_unchoke(peer)
        elif msg_id == wire.CHOKE:
            core.got_choke(peer)
        elif msg_id == wire.INTERESTED:
            core.got_interested(peer)
        elif msg_id == wire.NOT_INTERESTED:
            core.got_not_interested(peer)
        elif msg_id == wire.BITFIELD:
            core.got_bitfield(peer, Bitfield.from_bytes(core.meta.num_pieces, a))
        elif msg_id == wire.HAVE_ALL:
            core.got_bitfield(peer, Bitfield(core.meta.num_pieces, full=True))
        elif msg_id == wire.HAVE_NONE:
            core.got_bitfield(peer, Bitfield(core.meta.num_pieces))
        elif msg_id == wire.REJECT:
            core.got_reject(peer, a, b, c)
        # keep-alive, ALLOWED_FAST, SUGGEST, PORT, extensions: nothing to do.

    # --------------------------------------------------------------- sending
    def _write(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[union-attr]

    def _send(self, data: bytes) -> None:
        if self.state is State.ACTIVE:
            self.transport.write(data)  # type: ignore[union-attr]

    def send_bitfield(self, bits: Bitfield) -> None:
        self._send(wire.bitfield(bits.tobytes()))

    def send_have_all(self) -> None:
        self._send(_HAVE_ALL)

    def send_have_none(self) -> None:
        self._send(_HAVE_NONE)

    def send_have(self, index: int) -> None:
        self._send(wire.have(index))

    def send_choke(self) -> None:
        self._send(_CHOKE)

    def send_unchoke(self) -> None:
        self._send(_UNCHOKE)

    def send_interested(self) -> None:
        self._send(_INTERESTED)

    def send_not_interested(self) -> None:
        self._send(_NOT_INTERESTED)

    def send_requests(self, blocks: list[Block]) -> None:
        self._send(b"".join([wire.request(*block) for block in blocks]))

    def send_cancel(self, block: Block) -> None:
        self._send(wire.cancel(*block))

    def send_reject(self, block: Block) -> None:
        self._send(wire.reject(*block))

    def send_piece(self, index: int, begin: int, data: bytes) -> None:
        if self.state is State.ACTIVE:
            self.transport.writeSequence(  # type: ignore[union-attr]
                (wire.piece_header(index, begin, len(data)), data))

    def send_keepalive(self) -> None:
        self._send(wire.KEEPALIVE)

    # -------------------------------------------------- IPushProducer (sends)
    def pauseProducing(self) -> None:  # noqa: N802
        if self.peer is not None:
            self.core.send_paused(self.peer)

    def resumeProducing(self) -> None:  # noqa: N802
        if self.peer is None or self.state is not State.ACTIVE:
            return
        try:
            self.core.send_resumed(self.peer)
        except Exception:
            self.log.failure("upload to {address} failed", address=self.address)
            self.drop("internal error")

    def stopProducing(self) -> None:  # noqa: N802
        """The transport is closing; ``connectionLost`` follows and the core
        drops this peer's queue then."""


class PeerFactory(protocol.Factory):
    """Accepts incoming connections for a swarm."""

    noisy = False

    def __init__(self, core: SwarmEvents, send_buffer: int = 0) -> None:
        self.core = core
        self.send_buffer = send_buffer

    def buildProtocol(self, addr: Any) -> PeerProtocol | None:  # noqa: N802
        if not self.core.accepting():
            return None
        return PeerProtocol(self.core, outgoing=False, address=(addr.host, addr.port),
                            send_buffer=self.send_buffer)


class OutgoingFactory(protocol.ClientFactory):
    """Dials one peer returned by the tracker."""

    noisy = False

    def __init__(self, core: SwarmEvents, address: Address, send_buffer: int = 0) -> None:
        self.core = core
        self.address = address
        self.send_buffer = send_buffer

    def buildProtocol(self, addr: Any) -> PeerProtocol:  # noqa: N802
        return PeerProtocol(self.core, outgoing=True, address=self.address,
                            send_buffer=self.send_buffer)

    def clientConnectionFailed(self, connector: Any, reason: Any) -> None:  # noqa: N802
        self.core.dial_failed(self.address, reason.getErrorMessage())


class TCPDialer:
    """The production :class:`~murder.peer.interfaces.Dialer`: ``connectTCP``."""

    def __init__(self, reactor: Any, timeout: float, send_buffer: int = 0) -> None:
        self.reactor = reactor
        self.timeout = timeout
        self.send_buffer = send_buffer

    def dial(self, core: SwarmEvents, address: Address) -> None:
        host, port = address
        self.reactor.connectTCP(host, port, OutgoingFactory(core, address, self.send_buffer),
                                timeout=self.timeout)


__all__ = ["OutgoingFactory", "PeerFactory", "PeerProtocol", "State", "TCPDialer"]
