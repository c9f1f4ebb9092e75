"""The fake link: real peer-wire protocols talking through the modelled network.

Each host's :class:`~murder.peer.session.Swarm` gets a :class:`HostReactor`
(the shared virtual clock plus a ``connectTCP`` that dials through the
model); each connection is a pair of real
:class:`~murder.peer.protocol.PeerProtocol` objects whose transports
(:class:`SimTransport`) queue their writes into a :class:`~murder.sim.net.Pipe`.
The wire bytes are therefore real: handshake, bitfields, HAVEs, requests,
rejects and blocks are encoded, framed and parsed exactly as on TCP.

Two deliberate departures:

- ``scale``: a PIECE message written with ``writeSequence((header, block))``
  counts ``len(block) × scale`` bytes on the network, so a 16 KiB block can
  stand for a 16 MiB piece and a 1 GiB payload can be simulated with 1 MiB of
  real bytes (fewer, larger pieces: the fidelity knob of large runs).
- Flow control: the transport pauses its producer (the protocol's upload
  pump) while more than ``send_buffer`` modelled bytes wait to be sent, and
  resumes it once no more than ``resume_below`` do — the kernel send buffer
  plus Twisted's own write buffer, which is what makes upload turns
  hand over while the previous turn's data is still on the wire.

The adapter is this file only.  Two links (``Switchboard(link=…)``):

- ``"bytes"``: :class:`SimPeerProtocol`, the production protocol unchanged.
- ``"messages"`` (the default of ``murder simulate``):
  :class:`SimMessageProtocol` hands the receiving protocol the message
  tuple the real :class:`~murder.peer.wire.MessageReader` would have parsed
  (``(msg_id, a, b, c)``) instead of bytes, counted on the network at the
  encoded size.  Between our own peers the encode/parse round trip is pure
  and always succeeds, so it only costs time: 56 % of a 128-piece deploy's
  events are HAVEs, each encoded, framed and parsed.  The handshake stays
  bytes, and the core's dispatch (``PeerProtocol._dispatch``) is the real
  one.  ``tests/unit/test_sim_link.py`` runs a fleet both ways: same times.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.python.failure import Failure

from murder.peer import wire
from murder.peer.protocol import OutgoingFactory, PeerProtocol, State
from murder.sim.clock import SimClock
from murder.sim.net import Network, Pipe


class SimPeerProtocol(PeerProtocol):
    """The real protocol, hashed by creation order instead of memory address.

    The core keeps connections in sets (piece sources, request holders, paused
    uploads); iterating a set of address-hashed objects visits them in an
    order that differs from run to run, and so would the simulated deploy.
    """

    _created = 0

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        SimPeerProtocol._created += 1
        self._seq = SimPeerProtocol._created

    def __hash__(self) -> int:
        return self._seq


#: Encoded sizes (4-byte length prefix + id + payload) of the messages the
#: message-level link carries: what the bytes link would have counted.
_SIMPLE_SIZE = 5
_HAVE_SIZE = 9
_BLOCK_MSG_SIZE = 17
_PIECE_HEADER_SIZE = 13
_CHOKE_MSG = (wire.CHOKE, None, None, None)
_UNCHOKE_MSG = (wire.UNCHOKE, None, None, None)
_INTERESTED_MSG = (wire.INTERESTED, None, None, None)
_NOT_INTERESTED_MSG = (wire.NOT_INTERESTED, None, None, None)
_HAVE_ALL_MSG = (wire.HAVE_ALL, None, None, None)
_HAVE_NONE_MSG = (wire.HAVE_NONE, None, None, None)
_KEEPALIVE_MSG = (None, None, None, None)


class SimMessageProtocol(SimPeerProtocol):
    """The real protocol over a message-level link: after the handshake, each
    ``send_*`` posts the tuple the peer's reader would parse from its bytes,
    and :meth:`message_received` dispatches it as ``dataReceived`` would.

    Only the codec is skipped (encoders and :class:`~murder.peer.wire.MessageReader`,
    both pure); states, the core's calls, error handling and flow control
    are the production code's.
    """

    def _post(self, size: int, message: tuple) -> None:
        if self.state is State.ACTIVE:
            self.transport.post(size, message)  # type: ignore[union-attr]

    def send_bitfield(self, bits: wire.Bitfield) -> None:
        data = bits.tobytes()
        self._post(_SIMPLE_SIZE + len(data), (wire.BITFIELD, data, None, None))

    def send_have_all(self) -> None:
        self._post(_SIMPLE_SIZE, _HAVE_ALL_MSG)

    def send_have_none(self) -> None:
        self._post(_SIMPLE_SIZE, _HAVE_NONE_MSG)

    def send_have(self, index: int) -> None:
        if self.state is State.ACTIVE:
            self.transport.post(_HAVE_SIZE, (wire.HAVE, index, None, None))  # type: ignore

    def send_choke(self) -> None:
        self._post(_SIMPLE_SIZE, _CHOKE_MSG)

    def send_unchoke(self) -> None:
        self._post(_SIMPLE_SIZE, _UNCHOKE_MSG)

    def send_interested(self) -> None:
        self._post(_SIMPLE_SIZE, _INTERESTED_MSG)

    def send_not_interested(self) -> None:
        self._post(_SIMPLE_SIZE, _NOT_INTERESTED_MSG)

    def send_requests(self, blocks: list) -> None:
        # One write on the bytes link (the REQUESTs joined): one chunk here.
        if self.state is State.ACTIVE:
            self.transport.post_many(  # type: ignore[union-attr]
                _BLOCK_MSG_SIZE * len(blocks), [(wire.REQUEST, *block) for block in blocks])

    def send_cancel(self, block: Any) -> None:
        self._post(_BLOCK_MSG_SIZE, (wire.CANCEL, *block))

    def send_reject(self, block: Any) -> None:
        self._post(_BLOCK_MSG_SIZE, (wire.REJECT, *block))

    def send_piece(self, index: int, begin: int, data: bytes) -> None:
        if self.state is State.ACTIVE:
            transport: Any = self.transport
            transport.post(_PIECE_HEADER_SIZE + len(data) * transport.conn.scale,
                           (wire.PIECE, index, begin, data))

    def send_keepalive(self) -> None:
        self._post(4, _KEEPALIVE_MSG)

    #: Set by the transport when it stops reading (``loseConnection``, or
    #: the connection closed): the network delivers straight to
    #: :meth:`message_received`, which checks this instead of the transport
    #: (one object fewer to touch per message at 10,000 hosts).
    _deaf = False

    def message_received(self, message: tuple) -> None:
        """One message, as ``dataReceived`` handles each one its reader returns
        (called by the network directly: the transport's checks are here)."""
        if self._deaf or self.state is not State.ACTIVE or self._dropped:
            return
        try:
            self.core.heard_from(self.peer)  # type: ignore[arg-type]  # ACTIVE: set
            self._dispatch(message)
        except Exception as e:
            self.receive_failed(e)

    def messages_received(self, messages: list) -> None:
        """Several messages of one write (REQUESTs), as one ``dataReceived``."""
        if self._deaf or self.state is not State.ACTIVE or self._dropped:
            return
        try:
            self.core.heard_from(self.peer)  # type: ignore[arg-type]  # ACTIVE: set
            for message in messages:
                if self.state is State.CLOSED or self._dropped:
                    return
                self._dispatch(message)
        except Exception as e:
            self.receive_failed(e)


#: ``Switchboard(link=…)``: which protocol class each link runs.
LINKS = {"bytes": SimPeerProtocol, "messages": SimMessageProtocol}


class SimPeerFactory:
    """Accepts incoming connections for a swarm (``PeerFactory`` with :class:`SimPeerProtocol`,
    or ``protocol`` given: the link's class)."""

    def __init__(self, swarm: Any, protocol: type[SimPeerProtocol] = SimPeerProtocol) -> None:
        self.swarm = swarm
        self.protocol = protocol

    def buildProtocol(self, addr: Any) -> SimPeerProtocol | None:  # noqa: N802
        if not self.swarm.accepting():
            return None
        return self.protocol(self.swarm, outgoing=False, address=(addr.host, addr.port))


class SimConnector:
    """What ``connectTCP`` returns."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.address = address
        self.stopped = False

    def stopConnecting(self) -> None:  # noqa: N802 (Twisted API)
        self.stopped = True

    disconnect = stopConnecting

    def getDestination(self) -> IPv4Address:  # noqa: N802
        return IPv4Address("TCP", *self.address)


class SimTransport:
    """One end of a simulated TCP connection (the ``ITransport`` subset peers use)."""

    def __init__(self, conn: "SimConnection", pipe: Pipe, host: tuple[str, int],
                 peer: tuple[str, int]) -> None:
        self.conn = conn
        self.pipe = pipe
        self.protocol: Any = None
        self.other: SimTransport | None = None
        self._host = IPv4Address("TCP", *host)
        self._peer = IPv4Address("TCP", *peer)
        self.producer: Any = None
        self.producer_paused = False
        self.disconnecting = False
        #: The message-level link's receivers at the other end (bound once).
        self.deliver_one: Any = None
        self.deliver_many: Any = None
        pipe.on_sent = self._sent

    # -- ITransport
    def write(self, data: bytes) -> None:
        if self.disconnecting or self.conn.closed:
            return
        net = self.conn.net
        net.send(self.pipe, len(data), data, self.other._receive)  # type: ignore[union-attr]
        self._check_pause()

    def writeSequence(self, seq) -> None:  # noqa: N802
        if self.disconnecting or self.conn.closed:
            return
        if len(seq) == 2:
            # (PIECE header, block): the block stands for ``scale`` times its bytes.
            size = len(seq[0]) + len(seq[1]) * self.conn.scale
        else:
            size = sum(len(s) for s in seq)
        self.conn.net.send(self.pipe, size, b"".join(seq),
                           self.other._receive)  # type: ignore[union-attr]
        self._check_pause()

    def post(self, size: int, message: tuple) -> None:
        """The message-level link's write: ``message`` travels as ``size`` bytes."""
        if self.disconnecting or self.conn.closed:
            return
        self.conn.net.send(self.pipe, size, message, self.deliver_one)
        self._check_pause()

    def post_many(self, size: int, messages: list) -> None:
        """Several messages of one write, delivered together."""
        if self.disconnecting or self.conn.closed:
            return
        self.conn.net.send(self.pipe, size, messages, self.deliver_many)
        self._check_pause()

    def loseConnection(self) -> None:  # noqa: N802
        if self.disconnecting or self.conn.closed:
            return
        self.disconnecting = True
        self.protocol._deaf = True
        if not self.pipe.active and not self.pipe.queue:
            self.conn.close_later()

    def abortConnection(self) -> None:  # noqa: N802
        self.conn.close_later()

    def getPeer(self) -> IPv4Address:  # noqa: N802
        return self._peer

    def getHost(self) -> IPv4Address:  # noqa: N802
        return self._host

    def registerProducer(self, producer: Any, streaming: bool) -> None:  # noqa: N802
        self.producer = producer if streaming else None

    def unregisterProducer(self) -> None:  # noqa: N802
        self.producer = None

    # reading control (download rate caps): not modelled
    def pauseProducing(self) -> None:  # noqa: N802
        pass

    def resumeProducing(self) -> None:  # noqa: N802
        pass

    # -- flow control and delivery
    def _check_pause(self) -> None:
        if self.producer is not None and not self.producer_paused and \
                self.pipe.backlog > self.conn.send_buffer:
            self.producer_paused = True
            self.producer.pauseProducing()

    def _sent(self, backlog: float) -> None:
        if self.producer_paused and backlog <= self.conn.resume_below and \
                not self.conn.closed:
            self.producer_paused = False
            self.producer.resumeProducing()
        if self.disconnecting and not self.pipe.queue:
            self.conn.close_later()

    def _receive(self, data: bytes) -> None:
        # Twisted stops reading once loseConnection is called: a dropped
        # connection hears nothing more, even what was already on its way.
        if not self.conn.closed and not self.disconnecting:
            self.protocol.dataReceived(data)


class SimConnection:
    """Both ends of one connection between two hosts of the model."""

    def __init__(self, net: Network, a: int, b: int, a_addr: tuple[str, int],
                 b_addr: tuple[str, int], scale: int, send_buffer: float,
                 resume_below: float) -> None:
        self.net = net
        self.scale = scale
        self.send_buffer = send_buffer
        self.resume_below = resume_below
        self.closed = False
        self._closing = False
        self.ab = SimTransport(self, net.pipe(a, b), a_addr, b_addr)
        self.ba = SimTransport(self, net.pipe(b, a), b_addr, a_addr)
        self.ab.other, self.ba.other = self.ba, self.ab

    def close_later(self) -> None:
        """Both ends see the close one path latency from now (FIN)."""
        if self._closing or self.closed:
            return
        self._closing = True
        self.net.clock.callLater(self.ab.pipe.latency, self._close)

    def _close(self) -> None:
        self.closed = True
        self.net.close(self.ab.pipe)
        self.net.close(self.ba.pipe)
        why = Failure(ConnectionDone())
        for end in (self.ab, self.ba):
            if end.protocol is not None:
                end.protocol._deaf = True
        for end in (self.ab, self.ba):
            end.disconnecting = True
            if end.protocol is not None:
                end.protocol.connectionLost(why)


class Listener:
    """A host's listening socket: which factory accepts, and where it lives."""

    def __init__(self, host: int, address: tuple[str, int], factory: Any) -> None:
        self.host = host
        self.address = address
        self.factory = factory


class Switchboard:
    """Who listens where, and how to dial them through the network."""

    def __init__(self, clock: SimClock, net: Network, *, scale: int = 1,
                 send_buffer: float = 384 * 1024, resume_below: float = 256 * 1024,
                 link: str = "bytes") -> None:
        self.clock = clock
        #: The protocol class every connection runs (:data:`LINKS`).
        self.protocol = LINKS[link]
        self.net = net
        self.scale = scale
        self.send_buffer = send_buffer
        self.resume_below = resume_below
        self.listeners: dict[tuple[str, int], Listener] = {}
        self.connections = 0

    def listen(self, host: int, address: tuple[str, int], factory: Any) -> None:
        self.listeners[address] = Listener(host, address, factory)

    def reactor_for(self, host: int, ip: str) -> "HostReactor":
        return HostReactor(self, host, ip)

    def dial(self, src: int, src_ip: str, sport: int, address: tuple[str, int],
             factory: Any) -> SimConnector:
        connector = SimConnector(address)
        target = self.listeners.get(address)
        rtt = 2 * (self.net.latency(src, target.host) if target else 2 * self.net.hop_latency)
        self.clock.callLater(rtt, self._connect, src, (src_ip, sport), target, factory,
                             connector)
        return connector

    def _connect(self, src: int, src_addr: tuple[str, int], target: Listener | None,
                 factory: Any, connector: SimConnector) -> None:
        if connector.stopped:
            return
        server = None
        if target is not None:
            server = target.factory.buildProtocol(IPv4Address("TCP", *src_addr))
        if server is None or target is None:
            factory.clientConnectionFailed(connector, Failure(ConnectionRefusedError()))
            return
        if isinstance(factory, OutgoingFactory):
            client = self.protocol(factory.core, outgoing=True, address=factory.address)
        else:
            client = factory.buildProtocol(IPv4Address("TCP", *target.address))
        conn = SimConnection(self.net, src, target.host, src_addr, target.address,
                             self.scale, self.send_buffer, self.resume_below)
        self.connections += 1
        conn.ba.protocol = server
        conn.ab.protocol = client
        if isinstance(client, SimMessageProtocol) != isinstance(server, SimMessageProtocol):
            raise TypeError("both ends of a simulated connection need the same link "
                            "(SimPeerFactory(swarm, board.protocol))")
        if isinstance(client, SimMessageProtocol):
            conn.ab.deliver_one = server.message_received
            conn.ab.deliver_many = server.messages_received
            conn.ba.deliver_one = client.message_received
            conn.ba.deliver_many = client.messages_received
        server.makeConnection(conn.ba)
        client.makeConnection(conn.ab)


class HostReactor:
    """One host's view of the simulation: the shared clock, dialing from this host."""

    def __init__(self, board: Switchboard, host: int, ip: str) -> None:
        self.board = board
        self.host = host
        self.ip = ip
        self.seconds = board.clock.seconds
        self.callLater = board.clock.callLater  # noqa: N815 (Twisted API)
        self.getDelayedCalls = board.clock.getDelayedCalls  # noqa: N815
        self._port = 40000

    def connectTCP(self, host: str, port: int, factory: Any, timeout: float = 30,  # noqa: N802
                   bindAddress: Any = None) -> SimConnector:  # noqa: N803
        self._port += 1
        if self._port > 65000:
            self._port = 40001
        return self.board.dial(self.host, self.ip, self._port, (host, port), factory)
