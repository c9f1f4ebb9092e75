"""One torrent's swarm: connections, picker, storage and upload turns together.

:class:`Swarm` is the core that the protocols report to; it decides what to
request, what to serve and whom to drop.  It does no socket I/O itself except
through the injected ``reactor`` (``connectTCP``) and the protocols.
``swarm.done`` fires when the payload is complete, verified and in place.
"""

from __future__ import annotations

import hashlib
import os
import random
from collections import deque
from dataclasses import dataclass
from typing import Callable

from twisted.internet import defer, task
from twisted.logger import Logger

from murder.errors import MurderError, StalledError, StorageError
from murder.metainfo import Metainfo
from murder.peer import wire
from murder.peer.picker import Picker
from murder.peer.protocol import OutgoingFactory, PeerProtocol
from murder.peer.storage import PieceStorage
from murder.peer.wire import BLOCK_SIZE, Bitfield


@dataclass(frozen=True)
class SwarmConfig:
    """Tuning knobs with datacenter defaults (see docs in peer/tap.py)."""

    max_connections: int = 200
    #: Upload slots: how many peers we send pieces to at the same moment.
    #: Every interested peer is unchoked (no tit-for-tat among trusted hosts)
    #: and its requests queue; the slots take turns a piece at a time, so a
    #: piece reaches one peer at full link speed and can be forwarded at
    #: once, instead of reaching all of them slowly and together.  0 sends
    #: to everyone at once (TCP fair share).  See bench/README.md.
    upload_slots: int = 1
    #: Kernel send buffer per connection when slots are limited: small, so
    #: that a turn's data has left before the next turn starts.
    send_buffer: int = 128 * 1024
    #: Bytes asked for in one request from another murder peer (its peer id
    #: says so): up to 8 blocks of 16 KiB in one message.  Every message
    #: costs Python work at both ends (framing, bookkeeping, a disk read, a
    #: transport write), so 128 KiB requests cut that work per byte about
    #: eight-fold.  Standard clients always get 16 KiB requests (BEP 3 says
    #: larger ones may be refused).  See bench/README.md.
    request_size: int = 128 * 1024
    min_pipeline: int = 8
    max_pipeline: int = 256
    #: Seconds of data to keep requested from a peer at its measured rate.
    request_horizon: float = 0.25
    #: A peer that sends nothing for this long with requests pending loses them
    #: (blocks that still arrive are used).  Uploads take turns a piece at a
    #: time, so a request can wait for every other requester's piece first:
    #: about N pieces' time.  At 5 s, N=32 at 8 Mbit/s (0.13 s per piece)
    #: snubbed working peers a thousand times a run, re-requests piled onto
    #: other queues, and the deploy took 45.4 s; at 30 s, 35.0 s (bench/README).
    #: A dead host closes its connections; this only catches a hung one.
    snub_timeout: float = 30.0
    #: A murder peer whose requests from us wait for an upload turn sends a
    #: keep-alive every ``keepalive_interval`` seconds, so a busy uploader is
    #: never silent.  One that sends *nothing at all* for ``quiet_timeout``
    #: while our requests wait is wedged (SIGSTOPped, swapping, hung): its
    #: requests go to others then, not after the full ``snub_timeout``.
    #: Standard clients do not promise keep-alives; only the snub timer
    #: applies to them.
    quiet_timeout: float = 3.0
    keepalive_interval: float = 1.0
    #: An upload turn whose receiver has not drained its socket for this
    #: long (a wedged downloader) passes to the next peer in line.
    stuck_turn_timeout: float = 2.0
    idle_timeout: float = 120.0
    connect_timeout: float = 5.0
    random_first: int = 4
    #: Endgame (duplicate requests) starts when this few blocks are missing.
    endgame_blocks: int = 64
    #: Seeder: refuse (BEP 6 reject) a piece that a connected peer already has, once
    #: per requester, so the seeder's upload goes to pieces the swarm lacks.
    super_seed: bool = False
    #: Seeder: after every piece has left once, serve duplicates freely only
    #: until this many payload copies have been uploaded in all.  1.0: never
    #: (a peer that asks again a second after a refusal is still served).
    #: Measured (bench/README.md): 1.5 bought no time at N=4 or N=16 and cost
    #: half a payload of seeder upload at N=16, so the default is 1.0.
    seed_budget: float = 1.0
    #: Fail a download that verified no piece for this long (every source
    #: gone or banned); 0 waits forever.
    stall_timeout: float = 300.0
    max_upload_rate: int = 0  # bytes/s, 0 = unlimited
    max_download_rate: int = 0
    max_queued_requests: int = 2048
    fast: bool = True
    tick: float = 0.25


#: Our peer id prefix (Azureus style).  Every murder since 0.1 accepts
#: requests up to ``wire.MAX_REQUEST``, so a peer with this prefix is sent
#: large ones.
PEER_ID_PREFIX = b"-MU"
#: Our version in the peer id.  From 0110 on, a murder peer sends keep-alives
#: to peers whose requests wait for an upload turn (see ``quiet_timeout``).
PEER_VERSION = b"0110"


def make_peer_id() -> bytes:
    return PEER_ID_PREFIX + PEER_VERSION + b"-" + os.urandom(12)


def promises_keepalives(peer_id: bytes) -> bool:
    """Does this peer send keep-alives while our requests wait for a turn?"""
    return peer_id.startswith(PEER_ID_PREFIX) and peer_id[3:7].isdigit() and \
        peer_id[3:7] >= b"0110"


class _Bucket:
    """Token bucket for the optional rate caps.

    Every byte is counted, also those that arrive while over the limit, so a
    cap holds with many sources; ``wait`` says how long until it is back in
    credit.  Bursts are bounded by a quarter second of the rate.
    """

    def __init__(self, rate: int, now: float) -> None:
        self.rate = rate
        self.burst = max(rate / 4, float(BLOCK_SIZE))
        self.tokens = self.burst
        self.stamp = now

    def _refill(self, now: float) -> None:
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def spend(self, n: int, now: float) -> None:
        self._refill(now)
        self.tokens -= n

    def wait(self, now: float) -> float:
        """Seconds until the bucket is in credit again (0: it is)."""
        self._refill(now)
        return 0.0 if self.tokens > 0 else -self.tokens / self.rate + 0.001


class Swarm:
    """Everything about one torrent on this host."""

    log = Logger()

    def __init__(self, meta: Metainfo, storage: PieceStorage, have: Bitfield, reactor,
                 config: SwarmConfig = SwarmConfig(), peer_id: bytes | None = None,
                 listen_port: int = 0, rng: random.Random | None = None,
                 on_complete: Callable[[], None] | None = None) -> None:
        self.meta = meta
        self.storage = storage
        self.reactor = reactor
        self.clock = reactor
        self.config = config
        self.peer_id = peer_id or make_peer_id()
        self.listen_port = listen_port
        self.fast = config.fast
        self.max_queued_requests = config.max_queued_requests
        self.picker = Picker(meta.num_pieces, piece_length=meta.piece_length,
                             total_length=meta.total_length, random_first=config.random_first,
                             rng=rng, endgame_blocks=config.endgame_blocks)
        for index in have:
            self.picker.mark_have(index)
        self.have = self.picker.have
        self.connections: dict[bytes, PeerProtocol] = {}
        self.dialing: set[tuple[str, int]] = set()
        self.banned_ids: set[bytes] = set()
        self.banned_hosts: set[tuple[str, int]] = set()
        self.self_addresses: set[tuple[str, int]] = set()
        self.uploaded = 0
        self.downloaded = 0
        self.wasted = 0
        self.hash_failures = 0
        self.refused_requests = 0
        #: piece index -> [(begin, length, source, sha1 of its block)] of failed tries.
        self._suspects: dict[int, list] = {}
        self.done = defer.Deferred()
        self.failed: MurderError | None = None
        self._on_complete = on_complete
        now = reactor.seconds()
        self._up_bucket = _Bucket(config.max_upload_rate, now) if config.max_upload_rate else None
        self._down_bucket = (_Bucket(config.max_download_rate, now)
                             if config.max_download_rate else None)
        self._up_waiting: set[PeerProtocol] = set()
        self._down_paused: set[PeerProtocol] = set()
        self._up_call = None
        self._down_call = None
        self._served_to: dict[int, PeerProtocol] = {}
        #: Upload bytes per piece until every piece has left once (then None).
        self._sent: dict[int, int] = {}
        self._pieces_sent = 0
        self.first_copy_at: float | None = None
        self.uploaded_at_first_copy = 0
        self._min_depth = max(config.min_pipeline, -(-meta.piece_length // BLOCK_SIZE) + 4)
        self._up_active: list[PeerProtocol] = []
        self._up_turns: deque[PeerProtocol] = deque()
        self._last_tick = now
        self._judge_silence = True
        self._ticker = task.LoopingCall(self._tick)
        self._ticker.clock = reactor
        self._stopping = False
        self.started_at = now
        self._last_progress = now
        self.completed_at: float | None = now if self.have.complete else None

    # ------------------------------------------------------------ lifecycle
    def start(self) -> None:
        d = self._ticker.start(self.config.tick, now=False)
        d.addErrback(lambda f: self.log.failure("swarm ticker stopped", f))

    def stop(self) -> None:
        self._stopping = True
        if self._ticker.running:
            self._ticker.stop()
        for conn in list(self.connections.values()):
            conn.transport.loseConnection()

    @property
    def is_seed(self) -> bool:
        return self.have.complete

    def left(self) -> int:
        if self.have.complete:
            return 0
        done = sum(self.meta.piece_size(i) for i in self.have)
        return self.meta.total_length - done

    def accepting(self) -> bool:
        return not self._stopping and len(self.connections) < self.config.max_connections

    # ----------------------------------------------------------- discovery
    def add_peers(self, peers: list[tuple[tuple[str, int], bytes | None]]) -> None:
        """Dial peers the tracker returned, skipping ourselves and known ones."""
        for address, peer_id in peers:
            if self._stopping or len(self.connections) + len(self.dialing) >= \
                    self.config.max_connections:
                return
            if peer_id is not None and (peer_id == self.peer_id or peer_id in self.connections
                                        or peer_id in self.banned_ids):
                continue
            if address in self.dialing or address in self.banned_hosts \
                    or address in self.self_addresses:
                continue
            if any(c.address == address for c in self.connections.values()):
                continue
            if self.is_seed and peer_id is None:
                # A seed waits to be dialed by those who need it; dialing only
                # makes duplicate connections.
                continue
            self.dialing.add(address)
            host, port = address
            self.reactor.connectTCP(host, port, OutgoingFactory(self, address),
                                    timeout=self.config.connect_timeout)

    def dial_failed(self, address: tuple[str, int], why: str) -> None:
        self.dialing.discard(address)
        self.log.debug("cannot connect to {address}: {why}", address=address, why=why)

    def connection_failed(self, conn: PeerProtocol) -> None:
        if conn.outgoing:
            self.dialing.discard(conn.address)

    # ---------------------------------------------------------- handshakes
    def accept_handshake(self, conn: PeerProtocol) -> str | None:
        """Return a reason to refuse the connection, or None to accept it."""
        pid = conn.peer_id
        if self._stopping:
            return "shutting down"
        if pid == self.peer_id:
            if conn.outgoing:
                self.self_addresses.add(conn.address)
            return "connection to ourselves"
        if pid in self.banned_ids or conn.address in self.banned_hosts:
            return "banned peer"
        existing = self.connections.get(pid)
        if existing is not None:
            # Both sides dialed: keep the connection dialed by the smaller id,
            # a rule both ends apply identically.
            keep_new = conn.outgoing == (self.peer_id < pid)
            if not keep_new:
                return "duplicate peer id"
            existing.drop("duplicate peer id (superseded)")
            self._forget(existing)
        if len(self.connections) >= self.config.max_connections:
            return "too many connections"
        return None

    def connection_ready(self, conn: PeerProtocol) -> None:
        if conn.outgoing:
            self.dialing.discard(conn.address)
        self.connections[conn.peer_id] = conn
        if conn.peer_id.startswith(PEER_ID_PREFIX):
            conn.span = max(1, self.config.request_size // BLOCK_SIZE)
        conn.keepalives = promises_keepalives(conn.peer_id)
        self.log.debug("connected to {address}", address=conn.address)
        if conn.fast and self.have.complete:
            conn.send(wire.simple(wire.HAVE_ALL))
        elif conn.fast and self.have.count == 0:
            conn.send(wire.simple(wire.HAVE_NONE))
        elif self.have.count:
            conn.send(wire.bitfield(self.have.tobytes()))
        self.choker_update(conn)

    def _forget(self, conn: PeerProtocol) -> None:
        if self.connections.get(conn.peer_id) is conn:
            del self.connections[conn.peer_id]
            self.picker.peer_gone(conn.bits)
            self.requests_dropped(conn, list(conn.outstanding))
            self._up_waiting.discard(conn)
            self._down_paused.discard(conn)
            self._upload_forget(conn)

    def connection_lost(self, conn: PeerProtocol) -> None:
        self._forget(conn)
        self.log.debug("disconnected from {address}", address=conn.address)
        if not self._stopping:
            for other in list(self.connections.values()):
                self.fill_requests(other)

    def misbehaved(self, conn: PeerProtocol, why: str) -> None:
        self.ban(conn, why)

    def ban(self, conn: PeerProtocol, why: str) -> None:
        self.log.warn("banning {address}: {why}", address=conn.address, why=why)
        if conn.peer_id:
            self.banned_ids.add(conn.peer_id)
        if conn.address:
            self.banned_hosts.add(conn.address)
        conn.drop(why)

    # ------------------------------------------------------------ messages
    def got_bitfield(self, conn: PeerProtocol) -> None:
        self.picker.peer_bitfield(conn.bits)
        if self.have.complete and conn.bits.complete:
            conn.drop("both sides are seeds")
            return
        self._update_interest(conn)

    def got_have(self, conn: PeerProtocol, index: int) -> None:
        self.picker.peer_has(index)
        if self.have.complete:
            if conn.bits.complete:
                conn.drop("both sides are seeds")
            return
        if not conn.am_interested and index not in self.have:
            conn.set_interested(True)
        if conn.am_interested and self.picker.can_request(index):
            self.fill_requests(conn)

    def _update_interest(self, conn: PeerProtocol) -> None:
        conn.set_interested(self.picker.interesting(conn.bits))
        if conn.am_interested:
            self.fill_requests(conn)

    def choker_update(self, conn: PeerProtocol) -> None:
        """Interest changed: every interested peer is unchoked (trusted hosts)."""
        conn.set_choking(not conn.peer_interested)

    # -------------------------------------------------------- upload turns
    def upload_ready(self, conn: PeerProtocol) -> None:
        """``conn`` has queued requests: send now, or wait for a turn."""
        slots = self.config.upload_slots
        if not slots or conn in self._up_active:
            conn.pump()
            return
        if len(self._up_active) < slots:
            self._up_active.append(conn)
            conn.turn_piece = None
            conn.pump()
        elif conn not in self._up_turns:
            self._up_turns.append(conn)

    def others_waiting(self) -> bool:
        return bool(self._up_turns)

    def upload_turn_over(self, conn: PeerProtocol) -> None:
        """``conn`` finished its piece (or its queue): the next peer's turn."""
        if not self.config.upload_slots:
            return
        if conn in self._up_active:
            self._up_active.remove(conn)
        if conn.upload_queue and conn.active and conn not in self._up_turns:
            self._up_turns.append(conn)
        while self._up_turns and len(self._up_active) < self.config.upload_slots:
            nxt = self._up_turns.popleft()
            if not nxt.active or not nxt.upload_queue:
                continue
            self._up_active.append(nxt)
            nxt.turn_piece = None
            nxt.pump()

    def _upload_forget(self, conn: PeerProtocol) -> None:
        if conn in self._up_active:
            self._up_active.remove(conn)
            self.upload_turn_over(conn)
        if conn in self._up_turns:
            self._up_turns.remove(conn)

    # ------------------------------------------------------------- requests
    def _depth(self, conn: PeerProtocol) -> int:
        """Requests to keep outstanding: the peer's measured rate times the
        horizon, but never less than a whole piece, since a peer that sends a
        piece per upload turn must have all of it asked for."""
        depth = int(conn.rate * self.config.request_horizon / BLOCK_SIZE) + self._min_depth
        return min(depth, self.config.max_pipeline)

    def fill_requests(self, conn: PeerProtocol) -> None:
        if self.have.complete or not conn.am_interested or conn.peer_choking:
            return
        # A snubbed peer gets one block at a time (a probe): if it answers
        # it is not snubbed any more; if not, it holds up one block only.
        depth = 1 if conn.snubbed else self._depth(conn)
        if conn.span == 1 or conn.snubbed:
            want = depth - len(conn.outstanding)
        else:
            want = depth - sum(-(-length // BLOCK_SIZE) for _, _, length in conn.outstanding)
        # Refill in batches, not after every block: one picker pass per
        # quarter pipeline keeps the queue full at a fraction of the CPU.
        if want <= 0 or (conn.outstanding and want < max(1, depth // 4)):
            return
        now = self.clock.seconds()
        exclude = None
        if conn.rejected:
            # A rejected piece is asked of this peer again only after a pause
            # and only if no other *answering* connection can supply it: a
            # snubbed holder (silent, wedged) is no source.  Counting it kept
            # a peer away from the seeder that had refused it once, for ever
            # (a peer stalled at 30 of 32 pieces beside a silent peer).
            avail = self.picker.availability
            mute = [c.bits for c in self.connections.values() if c.snubbed and c is not conn]
            exclude = {i for i, t in conn.rejected.items()
                       if now - t < 2.0 or avail[i] - 1 - sum(i in b for b in mute) > 0}
        blocks = self.picker.next_requests(conn, conn.bits, want, exclude,
                                           1 if conn.snubbed else conn.span)
        if not blocks:
            if not conn.outstanding and not self.picker.interesting(conn.bits):
                conn.set_interested(False)
            return
        if not conn.outstanding:
            conn.last_block = now  # the snub timer starts with the first request
        out = []
        for block in blocks:
            conn.outstanding[block] = now
            out.append(wire.request(*block))
        conn.transport.write(b"".join(out))

    def requests_dropped(self, conn: PeerProtocol, blocks: list) -> None:
        for block in blocks:
            conn.outstanding.pop(block, None)
            self.picker.request_dropped(conn, block)

    def got_block(self, conn: PeerProtocol, index: int, begin: int, block: bytes) -> None:
        key = (index, begin, len(block))
        withdrawn = False
        if conn.outstanding.pop(key, None) is None:
            withdrawn = key in conn.withdrawn
            if not withdrawn:
                self.wasted += len(block)
                return
            conn.withdrawn.discard(key)
        conn.last_block = self.clock.seconds()
        if conn.snubbed:
            conn.snubbed = False
            self.log.info("{address} answers requests again", address=conn.address)
        self.downloaded += len(block)
        if self._down_bucket is not None:
            self._down_bucket.spend(len(block), conn.last_block)
            if self._down_bucket.wait(conn.last_block):
                self._throttle_download(conn)
        piece, others = self.picker.block_received(conn, index, begin, block, withdrawn)
        for other, duplicate in others:
            if other.outstanding.pop(duplicate, None) is not None:
                other.send(wire.cancel(*duplicate))
        if piece is not None:
            self._piece_complete(piece)
        if not self._stopping and not self.have.complete:
            self.fill_requests(conn)
            for other in {other for other, _ in others}:
                self.fill_requests(other)

    def _piece_complete(self, piece) -> None:
        if hashlib.sha1(piece.buffer).digest() != self.meta.pieces[piece.index]:
            self.hash_failures += 1
            self.wasted += piece.size
            self.picker.piece_failed(piece)
            self.log.warn("piece {index} failed its hash (sources {sources})",
                          index=piece.index, sources=[c.address for c in piece.sources])
            for c in piece.sources:
                c.strikes += 1
            if len(piece.sources) == 1:
                self.ban(next(iter(piece.sources)),
                         f"sent data failing the hash of piece {piece.index}")
            else:
                # Several sources: banning them all (or on strike counts) bans
                # the honest seeder too and can stall the download.  Remember
                # each source's block; the piece's verified data will tell.
                record = self._suspects.setdefault(piece.index, [])
                for b, source in enumerate(piece.block_from):
                    if source is not None:
                        begin = b * BLOCK_SIZE
                        block = piece.buffer[begin:begin + BLOCK_SIZE]
                        record.append((begin, len(block), source,
                                       hashlib.sha1(block).digest()))
            return
        liars = {source for begin, length, source, digest in self._suspects.pop(piece.index, ())
                 if hashlib.sha1(piece.buffer[begin:begin + length]).digest() != digest}
        for source in liars:
            self.ban(source, f"sent a bad block of piece {piece.index}")
        try:
            self.storage.write_piece(piece.index, piece.buffer)
        except StorageError as e:
            self.fail(e)
            return
        self.picker.mark_have(piece.index)
        self._last_progress = self.clock.seconds()
        msg = wire.have(piece.index)
        for conn in list(self.connections.values()):
            if piece.index not in conn.bits:
                conn.send(msg)
        if self.have.complete:
            self._completed()

    def _completed(self) -> None:
        self.completed_at = self.clock.seconds()
        for conn in list(self.connections.values()):
            if conn.bits.complete:
                conn.drop("both sides are seeds")
            else:
                conn.set_interested(False)
        if self._on_complete is not None:
            self._on_complete()

    def fail(self, error: MurderError) -> None:
        """A fatal error: stop the swarm; the owner reports it."""
        if self.failed is None:
            self.failed = error
            self.log.error("{error}", error=str(error))
            self.stop()
            if not self.done.called:
                self.done.errback(error)

    # -------------------------------------------------------------- uploads
    def allow_request(self, conn: PeerProtocol, index: int) -> bool:
        """Super-seeding: the seeder sends each piece to one peer.

        A request for a piece that a connected peer already has, or that is
        being sent to another peer, is rejected once (BEP 6), so the seeder's
        upload goes to pieces the swarm lacks and peers fetch the rest from
        each other.  A peer that asks again is served: it may be unable to
        reach the others.  Peers without the fast extension cannot be told
        "no" without stalling them, so they are always served.
        """
        if not self.config.super_seed or not conn.fast:
            return True
        if self.first_copy_at is not None and \
                self.uploaded < self.config.seed_budget * self.meta.total_length:
            # Every piece has left once: spare upload shortens the tail, up to
            # a budget, so that the swarm, not the seeder, carries the fan-out.
            # Not before: a piece being *assigned* is not a piece sent, and
            # duplicates queued ahead of the last first copies delay them
            # (measured: 0.5 copies of duplicates before the last first copy
            # left, at N=16; see bench/README.md).
            return True
        owner = self._served_to.get(index)
        if owner is conn:
            return True
        now = self.clock.seconds()
        if owner is not None and owner.active and not self._stuck(owner, now) and \
                self.picker.availability[index] == 0:
            # On its way to another peer, which will offer it as soon as it
            # verifies: asking again does not help.  Unless that peer stopped
            # reading (frozen, swapping): then the piece is not on its way, and
            # refusing it to everyone else stalled the whole swarm.
            conn.seed_refused[index] = now
            self.refused_requests += 1
            return False
        refused_at = conn.seed_refused.get(index)
        if refused_at is not None:
            # The rest of the same burst is refused too; a request well after
            # the refusal, while peers hold the piece, means this peer cannot
            # reach them.
            if now - refused_at >= 1.0:
                return True
            self.refused_requests += 1
            return False
        if self.picker.availability[index] > 0:
            conn.seed_refused[index] = now
            self.refused_requests += 1
            return False
        self._served_to[index] = conn
        return True

    def _stuck(self, conn: PeerProtocol, now: float) -> bool:
        """Has ``conn`` not drained its socket for ``stuck_turn_timeout``?"""
        return conn.paused_since is not None and \
            now - conn.paused_since > self.config.stuck_turn_timeout

    def read_block(self, index: int, begin: int, length: int) -> bytes | None:
        try:
            return self.storage.read_block(index, begin, length)
        except StorageError as e:
            self.log.error("{error}", error=str(e))
            return None

    def upload_allowed(self, conn: PeerProtocol) -> bool:
        if self._up_bucket is None:
            return True
        delay = self._up_bucket.wait(self.clock.seconds())
        if not delay:
            return True
        self._up_waiting.add(conn)
        if self._up_call is None or not self._up_call.active():
            self._up_call = self.clock.callLater(delay, self._resume_uploads)
        return False

    def _resume_uploads(self) -> None:
        conns, self._up_waiting = self._up_waiting, set()
        for conn in conns:
            if conn.active:
                conn.resumeProducing()

    def _throttle_download(self, conn: PeerProtocol) -> None:
        """Over the download cap: stop reading from this peer until in credit."""
        conn.transport.pauseProducing()
        self._down_paused.add(conn)
        if self._down_call is None or not self._down_call.active():
            delay = self._down_bucket.wait(self.clock.seconds())
            self._down_call = self.clock.callLater(delay, self._resume_downloads)

    def _resume_downloads(self) -> None:
        delay = self._down_bucket.wait(self.clock.seconds())
        if delay:
            self._down_call = self.clock.callLater(delay, self._resume_downloads)
            return
        conns, self._down_paused = self._down_paused, set()
        now = self.clock.seconds()
        for conn in conns:
            if conn.active:
                # We were not reading: its silence meanwhile was ours.
                conn.last_received = now
                conn.transport.resumeProducing()

    def uploaded_block(self, conn: PeerProtocol, index: int, length: int) -> None:
        self.uploaded += length
        if self.first_copy_at is None and self.config.super_seed:
            sent = self._sent.get(index, 0) + length
            self._sent[index] = sent
            if sent >= self.meta.piece_size(index) and sent - length < self.meta.piece_size(index):
                self._pieces_sent += 1
                if self._pieces_sent == self.meta.num_pieces:
                    # The milestone that bounds a deploy: until here the
                    # seeder's upload is the swarm's scarcest resource.
                    self.first_copy_at = self.clock.seconds()
                    self.uploaded_at_first_copy = self.uploaded
                    self.log.info("every piece has left once: {copies:.2f} copies uploaded "
                                  "so far", copies=self.uploaded / self.meta.total_length)
        if self._up_bucket is not None:
            self._up_bucket.spend(length, self.clock.seconds())

    # ---------------------------------------------------------------- timer
    def _tick(self) -> None:
        now = self.clock.seconds()
        if not self.have.complete and self.config.stall_timeout and \
                now - self._last_progress > self.config.stall_timeout:
            self.fail(StalledError(self.config.stall_timeout, len(self.connections),
                                   self.meta.num_pieces - self.have.count))
            return
        tick = self.config.tick
        config = self.config
        # A late tick means this process did not run (CPU starved, stopped):
        # the silence it sees is its own, so it judges no one on silence now.
        self._judge_silence = now - self._last_tick < config.quiet_timeout / 2
        self._last_tick = now
        for conn in list(self.connections.values()):
            if not conn.active:
                continue
            recent = conn.downloaded - conn._rate_mark
            conn._rate_mark = conn.downloaded
            conn.rate = 0.7 * conn.rate + 0.3 * (recent / tick)
            if conn.upload_queue:
                self._upload_liveness(conn, now)
            if conn.outstanding and self._not_answering(conn, now):
                self._snub(conn, now)
            elif now - conn.last_received > config.idle_timeout:
                conn.drop("idle")
            else:
                self.fill_requests(conn)

    def _not_answering(self, conn: PeerProtocol, now: float) -> bool:
        """No block for ``snub_timeout``, or (from a peer that promises
        keep-alives) no byte at all for ``quiet_timeout`` while our
        requests wait.  ``last_block`` is also the time the pipeline was
        last started, so fresh requests are never judged."""
        waited = now - conn.last_block
        if waited > self.config.snub_timeout:
            return True
        return (conn.keepalives and self._judge_silence and waited > self.config.quiet_timeout
                and now - conn.last_received > self.config.quiet_timeout
                and conn not in self._down_paused)

    def _snub(self, conn: PeerProtocol, now: float) -> None:
        """Take back ``conn``'s requests and give them to others."""
        if not conn.snubbed:
            self.log.info("{address} is not answering requests; asking others",
                          address=conn.address)
        conn.snubbed = True
        conn.last_block = now
        # Kept in mind: if they arrive after all, they are still used.
        if len(conn.withdrawn) < 4 * self.config.max_pipeline:
            conn.withdrawn.update(conn.outstanding)
        self.requests_dropped(conn, list(conn.outstanding))
        for other in list(self.connections.values()):
            if other is not conn:
                self.fill_requests(other)

    def _upload_liveness(self, conn: PeerProtocol, now: float) -> None:
        """Requests from ``conn`` are queued here.  While they wait for a
        turn, tell it we are alive; while its turn makes no progress (its
        socket does not drain: a wedged downloader), pass the turn on."""
        if conn in self._up_active:
            if self._up_turns and self._stuck(conn, now):
                self.log.info("{address} is not reading; its upload turn passes",
                              address=conn.address)
                self._up_active.remove(conn)
                conn.turn_piece = None
                self._up_turns.append(conn)
                self.upload_turn_over(conn)
        elif now - conn.last_keepalive >= self.config.keepalive_interval:
            conn.last_keepalive = now
            conn.send(wire.KEEPALIVE)

    # ---------------------------------------------------------------- stats
    def stats(self) -> tuple[int, int, int]:
        return self.uploaded, self.downloaded, self.left()
