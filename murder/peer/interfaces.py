"""The declared contract between the peer wire and the swarm core.

Three parties meet here:

- a **link** (:class:`PeerLink`) is one connection to one remote peer.  In
  production it is :class:`murder.peer.protocol.PeerProtocol` (TCP, framing,
  the handshake); in tests and in the fleet simulator it is an in-memory fake
  that hands messages straight to another core.  A link *parses* and
  *sends*; it never decides.
- the **core** (:class:`SwarmEvents`) is one torrent on one host
  (:class:`murder.peer.session.Swarm`).  It decides what to request, what to
  serve, whom to choke, drop or ban.  It never touches a transport, a socket
  or the global reactor: it talks to links only through :class:`PeerLink`,
  dials through an injected :class:`Dialer` and reads time from an injected
  :class:`Clock`.  So thousands of cores can run in one process, in memory.
- a :class:`Peer` record is the core's bookkeeping about one connected peer
  (choke/interest state, bits, outstanding requests, upload queue, rates,
  snub state…).  The core creates it when the link is ready
  (:meth:`SwarmEvents.connection_ready`) and owns every field; the link keeps
  it only to pass it back with each event, and never writes to it.

Life of a connection, as the link reports it::

    dial(address) ─┬─ failure ──────────────────────────→ dial_failed(address, why)
                   └─ connected ┐
    incoming accepted (if accepting()) ┤
                                ▼
          handshake received: link.peer_id/link.fast set
                                ▼
          accept_handshake(link) → reason ──→ link drops itself
                                ▼ None
          peer = connection_ready(link)      (the core may send at once)
                                ▼
          got_*(peer, …) / heard_from(peer) / send_paused / send_resumed
                                ▼
          connection_lost(peer)              (closed before ready: connection_failed(link))

Errors: a core event may raise :class:`murder.errors.ProtocolError` for a
remote that broke the protocol (e.g. too many queued requests); the link then
drops the connection and reports :meth:`SwarmEvents.misbehaved`.  Sends on a
link that is closed or closing are ignored, never an error.

Messages are passed as values, not wire bytes: a production link encodes with
:mod:`murder.peer.wire`, an in-memory link may hand them over as they are.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, runtime_checkable

from murder.peer.wire import Bitfield

#: ``(host, port)`` of a remote peer.
Address = tuple[str, int]
#: ``(piece index, begin, length)`` of a request, a cancel, a reject or a block.
Block = tuple[int, int, int]


class DelayedCall(Protocol):
    """What :meth:`Clock.callLater` returns (Twisted's ``IDelayedCall`` subset used)."""

    def active(self) -> bool: ...

    def cancel(self) -> None: ...


class Clock(Protocol):
    """The time source a core is given: Twisted's ``IReactorTime`` subset.

    ``twisted.internet.task.Clock`` satisfies it, and so does the reactor.
    """

    def seconds(self) -> float: ...

    def callLater(self, delay: float, f: Callable[..., Any], *args: Any,  # noqa: N802
                  **kwargs: Any) -> DelayedCall: ...


class PieceStore(Protocol):
    """The payload as the core reads and writes it (verified pieces only).

    :class:`murder.peer.storage.PieceStorage` on disk;
    :class:`murder.testing.MemoryStorage` in memory.  Both raise
    :class:`murder.errors.StorageError`.
    """

    def read_block(self, index: int, begin: int, length: int) -> bytes: ...

    def write_piece(self, index: int, data: bytes | bytearray | memoryview) -> None: ...


@runtime_checkable
class PieceSink(Protocol):
    """Verifies (SHA-1) and writes assembled pieces elsewhere than the caller's
    thread: :class:`murder.peer.storage.PieceWriter` (a thread pool).

    ``submit`` fires True (hash matched, piece written), False (mismatch,
    nothing written) or fails with :class:`murder.errors.StorageError`; the
    caller does not touch ``data`` until then.  ``full``: enough is pending
    that the caller should stop requesting (back-pressure).
    """

    @property
    def full(self) -> bool: ...

    def submit(self, index: int, data: bytes | bytearray | memoryview) -> Any: ...

    def drain(self) -> Any: ...


@runtime_checkable
class PeerLink(Protocol):
    """What one connection offers the core.

    Attributes are set by the link before :meth:`SwarmEvents.accept_handshake`
    and do not change afterwards: ``address`` (the remote's, as dialed or as
    accepted), ``outgoing`` (we dialed), ``peer_id`` (from the remote's
    handshake) and ``fast`` (BEP 6 negotiated: both sides offered it).
    """

    address: Address
    outgoing: bool
    peer_id: bytes | None
    fast: bool

    # -- messages (ignored once the link is closed or closing)
    def send_bitfield(self, bits: Bitfield) -> None: ...

    def send_have_all(self) -> None: ...

    def send_have_none(self) -> None: ...

    def send_have(self, index: int) -> None: ...

    def send_choke(self) -> None: ...

    def send_unchoke(self) -> None: ...

    def send_interested(self) -> None: ...

    def send_not_interested(self) -> None: ...

    def send_requests(self, blocks: list[Block]) -> None:
        """Several REQUESTs at once (one write)."""

    def send_cancel(self, block: Block) -> None: ...

    def send_reject(self, block: Block) -> None:
        """BEP 6 REJECT; the core only calls it when ``fast`` is true."""

    def send_piece(self, index: int, begin: int, data: bytes) -> None:
        """One PIECE message carrying ``data`` (read and verified by the core)."""

    def send_keepalive(self) -> None:
        """A keep-alive: we are alive while the remote's requests wait for a turn."""

    # -- connection
    def drop(self, why: str) -> None:
        """Close the connection (``connection_lost``/``connection_failed`` follows).

        From this call on, nothing that arrives is delivered to the core: it
        has forgotten the peer, and requests made for it would be held by no one.
        """

    def pause_reading(self) -> None:
        """Stop delivering incoming messages until :meth:`resume_reading` (rate caps)."""

    def resume_reading(self) -> None: ...


@runtime_checkable
class Dialer(Protocol):
    """Opens outgoing connections for a core (injected: TCP, or in memory).

    The outcome reaches ``core``: a link with ``outgoing=True`` and
    ``address == address`` that goes through the handshake, or
    ``core.dial_failed(address, why)``.
    """

    def dial(self, core: SwarmEvents, address: Address) -> None: ...


@dataclass(eq=False, slots=True, repr=False)
class Peer:
    """The core's record of one connected peer (compared by identity, hashed as its link).

    Created by the core in ``connection_ready``; the link holds it only to
    pass it back.  The picker keys its bookkeeping on these records.
    """

    link: PeerLink
    #: Pieces the remote has (its BITFIELD/HAVE_ALL/HAVE_NONE, then HAVEs).
    bits: Bitfield
    #: False once ``connection_lost`` was reported.
    active: bool = True
    # Choke/interest state, both directions; BEP 3 starts choked, uninterested.
    am_choking: bool = True
    am_interested: bool = False
    peer_choking: bool = True
    peer_interested: bool = False
    # -- downloading from this peer (request pipeline)
    #: Requests sent and not yet answered → when sent.
    outstanding: dict[Block, float] = field(default_factory=dict)
    #: Requests given up on (snubbed) whose blocks are still welcome.
    withdrawn: set[Block] = field(default_factory=set)
    #: Piece index → when the peer REJECTed a request for it.
    rejected: dict[int, float] = field(default_factory=dict)
    #: 16 KiB blocks merged into one request to this peer (1: standard client).
    span: int = 1
    #: Payload bytes received from this peer.
    downloaded: int = 0
    #: Smoothed download rate from this peer, bytes/s (updated every tick).
    rate: float = 0.0
    #: ``downloaded`` at the previous tick, for ``rate``.
    rate_mark: int = 0
    #: Last time anything arrived (idle timeout).
    last_received: float = 0.0
    #: Last block received, or when the first request of a pipeline left (snub timer).
    last_block: float = 0.0
    #: Left our requests unanswered: one probe request at a time until a block arrives.
    snubbed: bool = False
    #: The remote (murder 0110+) sends keep-alives while our requests wait for
    #: its upload turns, so its total silence means it is wedged.
    keepalives: bool = False
    # -- uploading to this peer (turns, super-seeding)
    #: Requests accepted and not yet served, in order.
    upload_queue: deque[Block] = field(default_factory=deque)
    #: The transport asked us to stop sending (its buffer is full), and since when.
    send_paused: bool = False
    paused_since: float | None = None
    #: When we last sent this peer a keep-alive (its requests wait for a turn).
    last_keepalive: float = 0.0
    #: The piece this peer's current upload turn serves (None: turn not started).
    turn_piece: int | None = None
    #: Pieces begun in this peer's current upload turn (``SwarmConfig.turn_pieces``).
    turn_count: int = 0
    #: Payload bytes sent to this peer.
    uploaded: int = 0
    #: Super-seeding: piece index → when a request for it was refused.
    seed_refused: dict[int, float] = field(default_factory=dict)
    # -- rack awareness (the tracker's ``near`` networks; see requests.Nearness)
    #: 0: near (same rack as we are, or no topology known: all peers equal);
    #: 1: far (the tracker named our rack's networks and this peer is outside).
    distance: int = 0
    #: Its pieces are counted in the picker's ``near_availability`` (near,
    #: not snubbed); what is counted is ``bits`` less the pieces it refused.
    near_counted: bool = False

    def __repr__(self) -> str:
        return f"<Peer {self.link.address} {'active' if self.active else 'closed'}>"

    def __hash__(self) -> int:
        # As its link hashes: a simulator that hashes links by creation order
        # (for runs that repeat exactly) gets records that do the same.
        return hash(self.link)

    @property
    def address(self) -> Address:
        return self.link.address

    @property
    def peer_id(self) -> bytes | None:
        return self.link.peer_id

    @property
    def outgoing(self) -> bool:
        return self.link.outgoing

    @property
    def fast(self) -> bool:
        return self.link.fast


@runtime_checkable
class SwarmEvents(Protocol):
    """What the core offers a connection: the events a link reports.

    A link also reads ``info_hash``, ``peer_id`` and ``fast`` (to send its
    handshake) and ``num_pieces``/``piece_length``/``total_length`` (to
    bound what it parses) from :attr:`meta`.
    """

    #: Our peer id and whether we offer BEP 6.
    peer_id: bytes
    fast: bool
    #: The torrent (:class:`murder.metainfo.Metainfo`).
    meta: Any

    def accepting(self) -> bool:
        """May a new incoming connection be accepted at all?"""

    def dial_failed(self, address: Address, why: str) -> None: ...

    def accept_handshake(self, link: PeerLink) -> str | None:
        """The remote's handshake arrived: a reason to refuse, or None to accept."""

    def connection_ready(self, link: PeerLink) -> Peer:
        """Handshakes exchanged: the core's record for this link (pass it back)."""

    def connection_failed(self, link: PeerLink) -> None:
        """The link closed before ``connection_ready``."""

    def connection_lost(self, peer: Peer) -> None: ...

    def misbehaved(self, link: PeerLink, why: str) -> None:
        """The remote broke the protocol (the link has dropped it)."""

    def heard_from(self, peer: Peer) -> None:
        """Bytes arrived from the peer (resets its idle timer)."""

    def send_paused(self, peer: Peer) -> None:
        """The link's send buffer is full: stop serving this peer for now."""

    def send_resumed(self, peer: Peer) -> None: ...

    def got_choke(self, peer: Peer) -> None: ...

    def got_unchoke(self, peer: Peer) -> None: ...

    def got_interested(self, peer: Peer) -> None: ...

    def got_not_interested(self, peer: Peer) -> None: ...

    def got_bitfield(self, peer: Peer, bits: Bitfield) -> None:
        """BITFIELD, HAVE_ALL (full) or HAVE_NONE (empty), as a :class:`Bitfield`."""

    def got_have(self, peer: Peer, index: int) -> None: ...

    def got_request(self, peer: Peer, index: int, begin: int, length: int) -> None: ...

    def got_cancel(self, peer: Peer, index: int, begin: int, length: int) -> None: ...

    def got_reject(self, peer: Peer, index: int, begin: int, length: int) -> None: ...

    def got_block(self, peer: Peer, index: int, begin: int, data: bytes) -> None: ...


__all__ = ["Address", "Block", "Clock", "DelayedCall", "Dialer", "Peer", "PeerLink",
           "PieceSink", "PieceStore", "SwarmEvents"]
