"""Tuning knobs of the swarm core, and who we are on the wire (peer id).

Every default is a datacenter default, and most were settled by a benchmark
(bench/README.md says which).  :class:`SwarmConfig` is frozen: the tap builds
it from the command line and the core only reads it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class SwarmConfig:
    """Tuning knobs with datacenter defaults (command-line flags in peer/options.py)."""

    max_connections: int = 200
    #: Most connections we open ourselves (BitTornado's ``max_initiate``);
    #: 0: half of ``max_connections``.  The rest is left to peers that dial
    #: us.  When every host dials its whole list at once, the first hosts to
    #: announce (listed to each other) otherwise filled each other's places
    #: and later hosts could reach neither them nor the seeder: a simulated
    #: 1,000-host deploy had 200 of 1,000 done at 15 s, 726 at 43 s
    #: (bench/README.md, session 7).
    max_initiate: int = 0
    #: Upload slots: how many peers we send pieces to at the same moment.
    #: Every interested peer is unchoked (no tit-for-tat among trusted hosts)
    #: and its requests queue; the slots take turns a piece at a time, so a
    #: piece reaches one peer at full link speed and can be forwarded at
    #: once, instead of reaching all of them slowly and together.  0 sends
    #: to everyone at once (TCP fair share).  4, not 1: a turn whose
    #: receiver is slower than our link (its download shared with other
    #: senders, or a rack uplink) left the rest of our upload idle; simulated
    #: 320 hosts at 10 Gbit/s in racks: 2.05 x bound with 4 slots, 2.79
    #: with 1; real 8 and 16 hosts at 40 Mbit/s: the same within noise
    #: (bench/README.md, session 7).
    upload_slots: int = 4
    #: Pieces one upload turn may serve while others wait and the requester
    #: keeps asking (it passes at once when the requester's queue empties).
    #: 1: strict round-robin, every waiting peer progresses together.  More
    #: makes turns "sticky", toward the 2010 original's chain (its one upload
    #: slot rotated every 30 s: the seeder fed one peer at full rate, which
    #: forwarded to one other): the first receivers finish sooner, the rest
    #: wait up to (waiting peers) × ``turn_pieces`` pieces for a turn.
    #: See bench/README.md ("core scheduling and PieceWriter").
    turn_pieces: int = 1
    #: Seeder, until every piece has left once: the next upload turn goes to
    #: the waiting peer that has the fewest pieces (likely fed by nobody
    #: else), not the one that waited longest.  Aims the first pass at new
    #: chain heads.  Experimental, off by default (bench/README.md).
    seed_poorest_first: bool = False
    #: Seeder (super-seeding), until every piece has left once: unchoke only
    #: this many interested peers (the *heads*); the others stay choked and
    #: fetch from the heads and from each other.  The seeder's link then feeds
    #: a few peers at full rate and every piece flows on peer to peer, a piece
    #: a hop (the 2010 original's chain), instead of every peer getting a
    #: share of the seeder and all finishing late together.  0: every
    #: interested peer is unchoked (turns among all).  See bench/README.md
    #: ("Session 4").
    seed_heads: int = 0
    #: A choked waiter is made a head when the heads leave the seeder's link
    #: idle (no request queued from any head) this long, or when a head
    #: stops reading (``stuck_turn_timeout``), or after ``seed_head_wait``
    #: seconds at the latest: a peer that cannot reach the others is never
    #: kept from the seeder for longer than that.
    seed_head_idle: float = 0.5
    #: A peer, while it downloads: unchoke only this many interested peers
    #: (its downstream in the chain), the same rules as ``seed_heads`` except
    #: that a waiter is unchoked as soon as an upload slot would idle
    #: (``Chain.slot_free``); all once it is complete.  0: every interested
    #: peer (turns among all).  Off by default: 16 was faster in the
    #: simulator (1,000 hosts 1.89 → 1.82 × bound, a flat 100 at the real
    #: defaults 2.55 → 2.24 ×) but no faster on real processes (N=32), where
    #: start-up CPU decides (bench/README.md, session 9).
    peer_heads: int = 0
    seed_head_wait: float = 10.0
    #: With limited upload slots, the next turn goes to the waiting peer whose
    #: next requested piece the fewest of our connections have (the rarest
    #: spreads first), instead of the longest waiting; a waiter passed over
    #: this many times goes next.  0: plain round-robin.  See bench/README.md.
    rare_turns: int = 0
    #: With limited upload slots, the next turn goes to the waiting peer that
    #: holds the fewest pieces (first of equals: the longest waiting); a
    #: waiter passed over this many times goes next.  0: plain round-robin.
    #: Why: a deploy ends when its last host does, and a host with fewer
    #: sources than its neighbours falls behind under round-robin
    #: (bench/README.md, session 10).  On by default with ``poor_spread``
    #: since session 11: level with round-robin on real processes (N = 8 to
    #: 32, 4 racks × 8; within the run-to-run spread) and faster in the
    #: simulator where hosts see few others or fall behind (100 to 10,000
    #: hosts; bench/README.md, "Session 11").
    poor_turns: int = 8
    #: With ``poor_turns``: each holder adds to a waiter's piece count a fixed
    #: offset below this fraction of the torrent's pieces, drawn from the two
    #: peer ids (crc32), so holders disagree about waiters that are close and
    #: agree about one far behind.  Why: on a full mesh plain poorest-first
    #: has every holder serve the same poorest host at once, a herd that
    #: was slower than round-robin (bench/README.md, session 10 section 7,
    #: session 11).  0: the plain piece count.
    poor_spread: float = 0.25
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
    #: Shallower commits a receiver to one source for less time, so a new
    #: holder is asked sooner; 0.15 beat 0.25 in every A/B of session 5 (N=4,
    #: 8, 16 twice, 32: 2–7 % faster), 0.1 was level, 0.5 and 1.0 were slower
    #: (bench/README.md).  Above ~28 MB/s the pipeline cap decides instead.
    request_horizon: float = 0.15
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
    #: Rack-aware deploys (the tracker names our rack's networks): pieces
    #: fetched from far connections (other racks) at once, started at random
    #: among those no near connection holds, so a rack's hosts fetch
    #: different pieces across the uplink and share them inside the rack.
    far_pieces: int = 2
    #: Rack-aware deploys: a far requester (another rack: the tracker named
    #: our rack's networks) gets the next upload turn before near ones, every
    #: other turn at most, since what it fetches enters a rack that lacks it.
    #: Simulated (bench/README.md, session 4): faster and fewer bytes across
    #: racks at 160 and 320 hosts.  No effect without near networks.
    far_turns_first: bool = True
    #: Rack-aware deploys: how long a far fetch of a piece waits, in units
    #: of the time a far piece takes us, scaled by how doubtful it is that
    #: we own it in our rack (``Nearness.far_ready``), so that a rack mate
    #: we do not see brings it in first and we get it near.  0: no wait.
    #: Off by default: 25 brought simulated bytes across racks under 1.5
    #: payloads per rack but cost 16-25 % of time there, and on real processes
    #: (4 racks x 8) rack-aware with the wait was no faster than random
    #: handout (bench/README.md, session 6).  ``murder peer --far-wait 25``
    #: where uplink bytes matter more than minutes.  No effect without near
    #: networks.
    far_wait: float = 0.0
    #: Rack-aware deploys without a wait: when no near connection has work
    #: for us, a far connection may be asked for a piece we *back up* (we
    #: are among the next ``far_backups`` rack mates after its owner on the
    #: ring; the k-th after (k - 1) x 1.5 far piece times, the owner's
    #: chance), any other piece only once a far connection has offered it
    #: for 3 far piece times (``Nearness._backup_ready``), so a rack brings a
    #: piece in about once, not once per idle host.  2, not 1: with few far
    #: connections the owner and one backup may hold no far source of a
    #: piece (bench/README.md, session 7).  Negative: any piece at once (the
    #: behaviour before session 7).
    far_backups: int = 2


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


__all__ = ["PEER_ID_PREFIX", "PEER_VERSION", "SwarmConfig", "make_peer_id", "promises_keepalives"]
