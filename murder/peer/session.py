"""One torrent's swarm on this host: the core that ties the concerns together.

:class:`Swarm` implements :class:`~murder.peer.interfaces.SwarmEvents`: links
report handshakes and messages to it, and it decides, through
:mod:`~murder.peer.admission` (dialing, refusing, banning),
:mod:`~murder.peer.requests` (what to ask of whom, snubbing),
:mod:`~murder.peer.uploads` (turns, super-seeding, seed budget),
:mod:`~murder.peer.ratelimit` (caps) and :mod:`~murder.peer.completion`
(hash, write, blame).  It keeps the connections, announces verified pieces
and runs the tick (rates, snubs, idle and stall timers).

No I/O of its own: links (:class:`~murder.peer.interfaces.PeerLink`) carry
messages, an injected :class:`~murder.peer.interfaces.Dialer` opens
connections, the injected clock tells time.  It never imports the protocol,
so it runs as well over TCP as over in-memory links (tests, the simulator).
"""

from __future__ import annotations

import random
from typing import Callable

from twisted.internet import defer, task
from twisted.logger import Logger

from murder.errors import MurderError, ProtocolError, StalledError
from murder.metainfo import Metainfo
from murder.peer.admission import Admission
from murder.peer.completion import Completion
from murder.peer.config import PEER_ID_PREFIX, SwarmConfig, make_peer_id, promises_keepalives
from murder.peer.interfaces import Address, Clock, Dialer, Peer, PeerLink, PieceSink, PieceStore
from murder.peer.nearness import Nearness
from murder.peer.picker import Picker
from murder.peer.ratelimit import RateLimiter
from murder.peer.requests import Requests, set_interested
from murder.peer.uploads import Uploads
from murder.peer.wire import BLOCK_SIZE, Bitfield

__all__ = ["PEER_ID_PREFIX", "Swarm", "SwarmConfig", "make_peer_id"]


def send_what_we_have(link: PeerLink, have: Bitfield) -> None:
    """A new connection's first message: HAVE_ALL / HAVE_NONE (BEP 6) or a
    BITFIELD; nothing when we have nothing and the link is not fast."""
    if link.fast and have.complete:
        link.send_have_all()
    elif link.fast and have.count == 0:
        link.send_have_none()
    elif have.count:
        link.send_bitfield(have)


def measure_rate(peer: Peer, tick: float) -> None:
    """The peer's download rate to us, smoothed over ticks (pipeline depth, snubs)."""
    recent = peer.downloaded - peer.rate_mark
    peer.rate_mark = peer.downloaded
    peer.rate = 0.7 * peer.rate + 0.3 * (recent / tick)


class Swarm:
    """Everything about one torrent on this host."""

    log = Logger()

    def __init__(self, meta: Metainfo, storage: PieceStore, have: Bitfield, clock: Clock,
                 config: SwarmConfig = SwarmConfig(), peer_id: bytes | None = None,
                 rng: random.Random | None = None,
                 on_complete: Callable[[], None] | None = None,
                 dialer: Dialer | None = None, writer: PieceSink | None = None) -> None:
        self.meta = meta
        self.storage = storage
        self.clock = clock
        self.config = config
        self.peer_id = peer_id or make_peer_id()
        self.fast = config.fast
        self.picker = Picker(meta.num_pieces, piece_length=meta.piece_length,
                             total_length=meta.total_length, random_first=config.random_first,
                             rng=rng, endgame_blocks=config.endgame_blocks)
        for index in have:
            self.picker.mark_have(index)
        self.have = self.picker.have
        self.connections: dict[bytes, Peer] = {}
        self.admission = Admission(self.peer_id, config, self.connections, dialer, self._forget)
        self.downloaded = 0
        #: Bytes of blocks nobody asked for any more (duplicates, late arrivals).
        self.wasted_blocks = 0
        #: Errbacks with the :class:`MurderError` that stopped the swarm; never
        #: fires otherwise (completion is ``on_complete``).
        self.failure: defer.Deferred[None] = defer.Deferred()
        self.failed: MurderError | None = None
        self._on_complete = on_complete
        self.limiter = RateLimiter(clock, config.max_upload_rate, config.max_download_rate,
                                   self.send_resumed)
        self.near = Nearness(clock, self.picker, self.connections, self.peer_id,
                             config.far_backups)
        self.requests = Requests(clock, config, self.picker, meta.piece_length, self.connections,
                                 self.near)
        self.uploads = Uploads(clock, config, meta, self.picker, storage, self.limiter,
                               self.peer_id)
        self.completion = Completion(
            meta.pieces, self.picker, storage, writer, verified=self._piece_verified,
            ban=self.admission.ban, fail=self.fail, resume=self._refill_all,
            active=lambda: not self._stopping and self.failed is None)
        now = clock.seconds()
        self._last_tick = now
        self._ticker = task.LoopingCall(self._tick)
        self._ticker.clock = clock  # type: ignore[assignment]  # any Clock will do
        self._stopping = False
        self.started_at = now
        self._last_progress = now

    # ------------------------------------------------------------ lifecycle
    def start(self) -> None:
        d = self._ticker.start(self.config.tick, now=False)
        d.addErrback(lambda f: self.log.failure("swarm ticker stopped", f))

    def stop(self) -> None:
        self._stopping = True
        if self._ticker.running:
            self._ticker.stop()
        for peer in list(self.connections.values()):
            peer.link.drop("shutting down")

    @property
    def is_seed(self) -> bool:
        return self.have.complete

    @property
    def uploaded(self) -> int:
        return self.uploads.uploaded

    def left(self) -> int:
        if self.have.complete:
            return 0
        return self.meta.total_length - sum(self.meta.piece_size(i) for i in self.have)

    @property
    def wasted(self) -> int:
        """Bytes received and thrown away: unwanted blocks and failed pieces."""
        return self.wasted_blocks + self.completion.wasted

    @property
    def hash_failures(self) -> int:
        return self.completion.hash_failures

    def stats(self) -> tuple[int, int, int]:
        return self.uploaded, self.downloaded, self.left()

    def accepting(self) -> bool:
        return not self._stopping and len(self.connections) < self.config.max_connections

    # ----------------------------------------------------------- admission
    def add_peers(self, peers: list[tuple[Address, bytes | None]]) -> None:
        """Dial peers the tracker returned, skipping ourselves and known ones."""
        self.admission.add_peers(self, peers, self.is_seed)

    def dial_failed(self, address: Address, why: str) -> None:
        self.admission.dial_failed(address, why)

    def connection_failed(self, link: PeerLink) -> None:
        self.admission.connection_failed(link)

    def accept_handshake(self, link: PeerLink) -> str | None:
        """Return a reason to refuse the connection, or None to accept it."""
        return self.admission.accept(link, self._stopping)

    def connection_ready(self, link: PeerLink) -> Peer:
        pid = link.peer_id
        assert pid is not None
        self.admission.connected(link)
        peer = Peer(link, Bitfield(self.meta.num_pieces), last_received=self.clock.seconds())
        self.connections[pid] = peer
        self.near.classify(peer)  # near or far (rack-aware deploys)
        if pid.startswith(PEER_ID_PREFIX):
            peer.span = max(1, self.config.request_size // BLOCK_SIZE)
        peer.keepalives = promises_keepalives(pid)
        self.log.debug("connected to {address}", address=link.address)
        send_what_we_have(link, self.have)
        self.uploads.update_choke(peer)
        return peer

    def _forget(self, peer: Peer) -> None:
        pid = peer.peer_id
        if pid is not None and self.connections.get(pid) is peer:
            self.near.forget(peer)
            del self.connections[pid]
            self.picker.peer_gone(peer.bits)
            self.requests.dropped(peer, list(peer.outstanding))
            self.limiter.forget(peer)
            self.uploads.forget(peer)

    def connection_lost(self, peer: Peer) -> None:
        peer.active = False
        peer.upload_queue.clear()
        self._forget(peer)
        # Also when a duplicate superseded it (``_forget`` skipped it then):
        # it may hold the upload slot again, taken back while still open.
        self.uploads.forget(peer)
        self.log.debug("disconnected from {address}", address=peer.address)
        if not self._stopping:
            for other in list(self.connections.values()):
                self.requests.fill(other)

    def misbehaved(self, link: PeerLink, why: str) -> None:
        self.admission.ban(link, why)

    # ------------------------------------------------------------ messages
    def heard_from(self, peer: Peer) -> None:
        peer.last_received = self.clock.seconds()

    def send_paused(self, peer: Peer) -> None:
        peer.send_paused = True
        peer.paused_since = self.clock.seconds()

    def send_resumed(self, peer: Peer) -> None:
        peer.send_paused = False
        peer.paused_since = None
        if peer.active and peer.upload_queue:
            self.uploads.ready(peer)
        else:
            self.uploads.drained(peer)

    def got_choke(self, peer: Peer) -> None:
        self.requests.got_choke(peer)

    def got_unchoke(self, peer: Peer) -> None:
        peer.peer_choking = False
        self.requests.fill(peer)

    def got_interested(self, peer: Peer) -> None:
        peer.peer_interested = True
        self.uploads.update_choke(peer)

    def got_not_interested(self, peer: Peer) -> None:
        peer.peer_interested = False
        self.uploads.update_choke(peer)

    def got_bitfield(self, peer: Peer, bits: Bitfield) -> None:
        if peer.bits.count:
            # aria2 1.36 sends a BITFIELD after HAVE messages (BEP 3 says
            # first only).  Take it as a batch of HAVEs if it only adds pieces.
            if any(i not in bits for i in peer.bits):
                raise ProtocolError("bitfield after have messages drops pieces")
            for index in bits:
                self.got_have(peer, index)
            return
        peer.bits = bits
        self.picker.peer_bitfield(bits)
        self.near.bitfield(peer)
        if self.have.complete and bits.complete:
            peer.link.drop("both sides are seeds")
            return
        self.requests.update_interest(peer)

    def got_have(self, peer: Peer, index: int) -> None:
        if not peer.bits.add(index):
            return
        self.picker.peer_has(index)
        self.near.has(peer, index)
        if self.have.complete:
            if peer.bits.complete:
                peer.link.drop("both sides are seeds")
            return
        if not peer.am_interested and index not in self.have:
            set_interested(peer, True)
        if peer.am_interested and self.picker.can_request(index):
            self.requests.fill(peer)

    def got_request(self, peer: Peer, index: int, begin: int, length: int) -> None:
        self.uploads.got_request(peer, index, begin, length)

    def got_cancel(self, peer: Peer, index: int, begin: int, length: int) -> None:
        self.uploads.got_cancel(peer, index, begin, length)

    def got_reject(self, peer: Peer, index: int, begin: int, length: int) -> None:
        self.requests.got_reject(peer, (index, begin, length))

    def got_block(self, peer: Peer, index: int, begin: int, data: bytes) -> None:
        peer.downloaded += len(data)
        withdrawn = self.requests.accept_block(peer, (index, begin, len(data)))
        if withdrawn is None:
            self.wasted_blocks += len(data)
            return
        self.downloaded += len(data)
        self.limiter.downloaded(peer, len(data), peer.last_block)
        piece, others = self.picker.block_received(peer, index, begin, data, withdrawn)
        self.requests.cancel_duplicates(others)
        if piece is not None:
            self.completion.submit(piece)
        if self.completion.full:
            # Back-pressure: the worker threads are behind; no new requests
            # until a piece has been written (``Completion``).
            self.completion.held = True
        elif not self._stopping and not self.have.complete:
            self.requests.fill(peer)
            for other in {other for other, _ in others}:
                self.requests.fill(other)

    # -------------------------------------------------------------- pieces
    def _piece_verified(self, index: int) -> None:
        """A piece is hashed and on disk: tell the peers that lack it."""
        self.picker.mark_have(index)
        self._last_progress = self.clock.seconds()
        for peer in list(self.connections.values()):
            if index not in peer.bits:
                peer.link.send_have(index)
        if self.have.complete:
            self._completed()

    def _refill_all(self) -> None:
        if not self.have.complete:
            for peer in list(self.connections.values()):
                self.requests.fill(peer)

    def _completed(self) -> None:
        for peer in list(self.connections.values()):
            if peer.bits.complete:
                peer.link.drop("both sides are seeds")
            else:
                set_interested(peer, False)
        if self._on_complete is not None:
            self._on_complete()

    def fail(self, error: MurderError) -> None:
        """A fatal error: stop the swarm; the owner reports it."""
        if self.failed is None:
            self.failed = error
            self.log.error("{error}", error=str(error))
            self.stop()
            if not self.failure.called:
                self.failure.errback(error)

    # ---------------------------------------------------------------- timer
    def _tick(self) -> None:
        now = self.clock.seconds()
        config = self.config
        if not self.have.complete and config.stall_timeout and \
                now - self._last_progress > config.stall_timeout:
            self.fail(StalledError(config.stall_timeout, len(self.connections),
                                   self.meta.num_pieces - self.have.count))
            return
        # A late tick means this process did not run (CPU starved, stopped):
        # the silence it sees is its own, so it judges no one on silence now.
        judge_silence = now - self._last_tick < config.quiet_timeout / 2
        self._last_tick = now
        for peer in list(self.connections.values()):
            if not peer.active:
                continue
            measure_rate(peer, config.tick)
            if peer.upload_queue:
                self.uploads.liveness(peer, now)
            if peer.outstanding and self.requests.not_answering(
                    peer, now, judge_silence, self.limiter.reading_paused(peer)):
                self.requests.snub(peer, now)
            elif now - peer.last_received > config.idle_timeout:
                peer.link.drop("idle")
            elif not self.completion.held:
                self.requests.fill(peer)
        self.uploads.chain.tick(now)
