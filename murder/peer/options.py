"""Command line of ``murder-peer`` / ``murder-seeder`` and the frozen config it becomes.

``SeederOptions``/``PeerOptions`` only parse and validate (a
``usage.UsageError`` with a clear message); :func:`config_from` turns them
into a :class:`RunConfig`, which is all the rest of a run ever reads.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from typing import Any

from twisted.python import usage

from murder import metainfo
from murder.errors import MurderError
from murder.peer import wire
from murder.peer.session import SwarmConfig
from murder.peer.wire import BLOCK_SIZE


#: Largest torrent read from a stream (as :func:`metainfo.load` allows for files).
MAX_STREAM_TORRENT = 64 * 1024 * 1024


def read_torrent_stream(stream: Any) -> bytes:
    """One bencoded torrent from ``stream``, read up to its last byte only.

    Reading stops where the torrent ends, so the caller's pipe stays open: a
    controller (``murder deploy`` over ssh) sends the torrent on stdin and
    later ends the run by closing it (``--stop-on-eof``).
    """
    from murder import bencode
    from murder.errors import MetainfoError

    data = b""
    while True:
        end = bencode.value_end(data)
        if end is not None:
            return data[:end]
        if len(data) > MAX_STREAM_TORRENT:
            raise MetainfoError("the torrent on stdin is larger than 64 MiB")
        # read1 returns what is there (at least one byte) instead of waiting
        # for a full buffer: the sender keeps the pipe open after the torrent.
        chunk = stream.read1(65536) if hasattr(stream, "read1") else stream.read(1)
        if not chunk:
            raise MetainfoError("stdin ended before a whole torrent was read")
        data += chunk


def parse_rate(text: str) -> int:
    """``"0"``, ``"500K"``, ``"12.5M"``, ``"1G"`` → int bytes (a size, or bytes per second)."""
    text = text.strip().upper().removesuffix("/S").removesuffix("B")
    scale = {"K": 2**10, "M": 2**20, "G": 2**30}.get(text[-1:], 1)
    number = text[:-1] if scale != 1 else text
    try:
        value = float(number) * scale
    except ValueError:
        value = math.nan
    if not math.isfinite(value):  # "inf"/"nan" parse as floats but are no rate
        raise ValueError(f"not a rate: {text!r} (use e.g. 0, 500K, 12M)")
    if value < 0:
        raise ValueError("a rate cannot be negative")
    return int(value)


class _CommonOptions(usage.Options):
    optParameters: list[list[Any]] = [
        ["torrent", "t", None, "The .torrent file (required; '-': read it from stdin)."],
        ["port", "p", 0, "TCP port to accept peers on (0: any free port).", int],
        ["bind", None, "", "Local address to listen on (default: all)."],
        ["ip", None, None, "Address announced to the tracker (ip=); default: as seen by it."],
        ["tracker-timeout", None, 60.0,
         "Fail if no tracker answers within this many seconds.", float],
        ["ca", None, None, "CA certificate (PEM) to verify https:// trackers with."],
        ["client-cert", None, None, "Client certificate (PEM) for trackers that require one."],
        ["client-key", None, None, "Private key (PEM) of --client-cert (default: in that file)."],
        ["max-connections", None, 200, "Most peer connections kept open.", int],
        ["upload-slots", None, SwarmConfig.upload_slots,
         "Peers sent to at the same moment, a piece per turn; every interested peer "
         "is unchoked and queued. 0 = all at once (TCP fair share).", int],
        ["turn-pieces", None, 1,
         "Pieces one upload turn may serve while others wait and the requester keeps "
         "asking (1: strict round-robin; more: sticky turns, chain-like).", int],
        ["seed-heads", None, SwarmConfig.seed_heads,
         "Seeder: until every piece has left once, unchoke only this many peers; the "
         "others fetch from them, a chain (0: all; peers ignore it).", int],
        ["peer-heads", None, SwarmConfig.peer_heads,
         "Peer: while downloading, unchoke only this many peers (0: all).", int],
        ["rare-turns", None, SwarmConfig.rare_turns,
         "Next upload turn to the waiter asking for the rarest piece; one passed over "
         "this many times goes next (0: round-robin).", int],
        ["poor-turns", None, SwarmConfig.poor_turns,
         "Next upload turn to the waiter holding the fewest pieces; one passed over "
         "this many times goes next (0: round-robin).", int],
        ["poor-spread", None, SwarmConfig.poor_spread,
         "With --poor-turns: each host ranks waiters by pieces held plus its own fixed "
         "offset below this fraction of the pieces, so hosts do not all serve the same "
         "poorest one (0: none).", float],
        ["pipeline", None, 256, "Most 16 KiB requests outstanding per peer.", int],
        ["request-horizon", None, SwarmConfig.request_horizon,
         "Seconds of data kept requested from each peer at its measured rate.", float],
        ["far-wait", None, SwarmConfig.far_wait,
         "Rack-aware deploys (the tracker names near networks): how long, in units of "
         "this host's measured far-piece time scaled by how often rack mates beat it, "
         "a piece another rack holds waits for a rack mate to bring it in (0: no wait).",
         float],
        ["far-backups", None, SwarmConfig.far_backups,
         "Rack-aware deploys: when no rack mate has work for this host, it fetches from "
         "other racks the pieces it backs up (next this many after a piece's owner on "
         "the rack's ring), others only after a while (-1: any piece at once).", int],
        ["hash-threads", None, 0,
         "Threads that hash (SHA-1) and write downloaded pieces off the network thread "
         "(0: on it; a seeder downloads nothing). Helps only with spare cores: see "
         "bench/README.md.", int],
        ["request-size", None, "128K",
         "Bytes per request to other murder peers (16K to 128K, a multiple of 16K; "
         "standard clients always get 16K)."],
        ["snub-timeout", None, 30.0,
         "Seconds a peer may leave our requests unanswered before they are asked "
         "of others (blocks that still arrive are used).", float],
        ["stall-timeout", None, 300.0,
         "Fail when no piece verified for this many seconds (0: wait forever).", float],
        ["max-upload-rate", None, "0", "Upload cap, bytes/s with K/M/G suffix (0: none)."],
        ["max-download-rate", None, "0", "Download cap, bytes/s with K/M/G (0: none)."],
        ["progress-interval", None, None,
         "Seconds between progress lines (default: 0.5 on a terminal, else 5).", float],
    ]
    optFlags: list[list[Any]] = [["quiet", "q", "Only warnings and errors; no progress display."],
                ["seed-poorest-first", None,
                 "Seeder (experimental): until every piece has left once, the next upload "
                 "turn goes to the waiting peer with the fewest pieces (peers ignore it)."]]

    def __init__(self) -> None:
        super().__init__()
        self["trust"] = []

    def opt_trust(self, path: str) -> None:
        """Trusted Ed25519 public key, file or directory (repeatable; default: $MURDER_TRUST)."""
        self["trust"].append(path)

    def postOptions(self) -> None:  # noqa: N802
        if not self["torrent"]:
            raise usage.UsageError("--torrent is required")
        if not 0 <= self["port"] < 65536:
            raise usage.UsageError(f"--port {self['port']} is not a TCP port")
        for key in ("max-upload-rate", "max-download-rate"):
            try:
                self[key] = parse_rate(str(self[key]))
            except ValueError as e:
                raise usage.UsageError(f"--{key}: {e}") from None
        try:
            size = parse_rate(str(self["request-size"]))
        except ValueError as e:
            raise usage.UsageError(f"--request-size: {e}") from None
        if size % BLOCK_SIZE or not BLOCK_SIZE <= size <= wire.MAX_REQUEST:
            raise usage.UsageError(
                f"--request-size must be a multiple of 16K from 16K to 128K, not {size}")
        self["request-size"] = size
        for key in ("tracker-timeout", "max-connections", "pipeline"):
            if self[key] <= 0:
                raise usage.UsageError(f"--{key} must be positive")
        if self["client-key"] and not self["client-cert"]:
            raise usage.UsageError("--client-key needs --client-cert")
        if self["client-cert"] and not self["ca"]:
            raise usage.UsageError("--client-cert needs --ca (the tracker's CA)")
        if not self["snub-timeout"] > 0:
            raise usage.UsageError("--snub-timeout must be positive")
        if self["stall-timeout"] < 0:
            raise usage.UsageError("--stall-timeout cannot be negative")
        if self["upload-slots"] < 0:
            raise usage.UsageError("--upload-slots cannot be negative")
        if not 0 <= self["hash-threads"] <= 64:
            raise usage.UsageError("--hash-threads must be from 0 to 64")
        if self["seed-heads"] < 0:
            raise usage.UsageError("--seed-heads cannot be negative")
        if not 0 < self["request-horizon"] <= 10:
            raise usage.UsageError("--request-horizon must be above 0 and at most 10 seconds")
        if self["rare-turns"] < 0:
            raise usage.UsageError("--rare-turns cannot be negative")
        if self["poor-turns"] < 0:
            raise usage.UsageError("--poor-turns cannot be negative")
        if not 0 <= self["poor-spread"] <= 1:
            raise usage.UsageError("--poor-spread is a fraction from 0 to 1")
        if not 0 <= self["far-wait"] <= 1000:
            raise usage.UsageError("--far-wait must be from 0 to 1000")
        if not -1 <= self["far-backups"] <= 254:
            raise usage.UsageError("--far-backups must be from -1 to 254")
        if self["peer-heads"] < 0:
            raise usage.UsageError("--peer-heads cannot be negative")
        if self["turn-pieces"] < 1:
            raise usage.UsageError("--turn-pieces must be at least 1")
        try:
            if self["torrent"] == "-":
                self["meta"] = metainfo.parse(read_torrent_stream(sys.stdin.buffer))
            else:
                self["meta"] = metainfo.load(self["torrent"])
        except MurderError as e:
            raise usage.UsageError(str(e)) from None


class SeederOptions(_CommonOptions):
    """``murder seed`` / ``twistd murder-seeder``."""

    synopsis = "murder seed --torrent T --file F [options]"
    optParameters: list[list[Any]] = [
        ["file", "f", None, "The payload: file, or directory of a multi-file torrent."],
        ["seed-budget", None, 1.0,
         "Once every piece has left once, serve pieces peers could get from each other "
         "until this many payload copies are uploaded in all (1: never).", float],
    ]
    optFlags: list[list[Any]] = [
        ["skip-verify", None, "Do not hash the payload at start (you just made the torrent)."],
        ["no-super-seed", None, "Serve any piece asked for, even ones peers already have."],
    ]

    def postOptions(self) -> None:  # noqa: N802
        if not self["file"]:
            raise usage.UsageError("--file is required")
        if not self["seed-budget"] >= 1.0:  # also refuses nan
            raise usage.UsageError("--seed-budget must be at least 1 (one copy)")
        super().postOptions()


class PeerOptions(_CommonOptions):
    """``murder peer`` / ``twistd murder-peer``."""

    synopsis = "murder peer --torrent T (--destination DIR | --saveas PATH) [options]"
    optParameters: list[list[Any]] = [
        ["destination", "d", None, "Directory; the payload lands as DIR/<torrent name>."],
        ["saveas", None, None, "Exact path for the payload (legacy scripts)."],
        ["seed-time", None, 30.0, "Seconds to keep seeding after completion.", float],
        ["max-linger", None, 300.0, "With --seed-until-swarm-done: most seconds to linger.",
         float],
        ["status-fd", None, None, "Write 'complete PATH' or 'failed REASON' to this fd.", int],
    ]
    optFlags: list[list[Any]] = [["seed-until-swarm-done", None,
                 "Seed until every peer is done (bounded by --max-linger), not --seed-time."],
                ["stop-on-eof", None,
                 "Stop cleanly, as on SIGTERM, when stdin closes (for a controller such "
                 "as `murder deploy` holding the pipe; use with --torrent -)."]]

    def postOptions(self) -> None:  # noqa: N802
        if bool(self["destination"]) == bool(self["saveas"]):
            raise usage.UsageError("give exactly one of --destination and --saveas")
        if self["seed-time"] < 0 or self["max-linger"] < 0:
            raise usage.UsageError("--seed-time and --max-linger cannot be negative")
        if self["destination"] and not os.path.isdir(self["destination"]):
            raise usage.UsageError(f"--destination {self['destination']} is not a directory")
        super().postOptions()


@dataclass(frozen=True)
class RunConfig:
    """Everything a run needs, validated."""

    meta: metainfo.Metainfo
    role: str  # "peer" or "seeder"
    path: str  # payload (seeder) or target (peer)
    port: int
    bind: str
    ip: str | None
    tracker_timeout: float
    trust: tuple[str, ...]
    ca: str | None
    quiet: bool
    swarm: SwarmConfig
    client_cert: str | None = None
    client_key: str | None = None
    progress_interval: float | None = None
    skip_verify: bool = False
    seed_time: float = 30.0
    seed_until_swarm_done: bool = False
    max_linger: float = 300.0
    status_fd: int | None = None
    stop_on_eof: bool = False
    #: Worker threads for piece hashing and writing (0: the reactor thread).
    hash_threads: int = 0


def config_from(options: _CommonOptions) -> RunConfig:
    meta = options["meta"]
    seeder = isinstance(options, SeederOptions)
    swarm = SwarmConfig(
        max_connections=options["max-connections"], upload_slots=options["upload-slots"],
        max_pipeline=options["pipeline"], max_upload_rate=options["max-upload-rate"],
        max_download_rate=options["max-download-rate"], stall_timeout=options["stall-timeout"],
        super_seed=seeder and not options["no-super-seed"],
        seed_budget=options["seed-budget"] if seeder else SwarmConfig.seed_budget,
        request_size=options["request-size"], snub_timeout=options["snub-timeout"],
        turn_pieces=options["turn-pieces"],
        seed_poorest_first=bool(options["seed-poorest-first"]),
        seed_heads=options["seed-heads"], peer_heads=options["peer-heads"],
        rare_turns=options["rare-turns"], poor_turns=options["poor-turns"],
        poor_spread=options["poor-spread"],
        request_horizon=options["request-horizon"],
        far_wait=options["far-wait"], far_backups=options["far-backups"],
    )
    common = dict(meta=meta, port=options["port"], bind=options["bind"], ip=options["ip"],
                  tracker_timeout=options["tracker-timeout"], trust=tuple(options["trust"]),
                  ca=options["ca"], quiet=bool(options["quiet"]), swarm=swarm,
                  client_cert=options["client-cert"], client_key=options["client-key"],
                  progress_interval=options["progress-interval"])
    if seeder:
        return RunConfig(role="seeder", path=os.path.abspath(options["file"]),
                         skip_verify=bool(options["skip-verify"]), **common)
    target = options["saveas"] or os.path.join(options["destination"], meta.name)
    return RunConfig(role="peer", path=os.path.abspath(target),
                     seed_time=options["seed-time"],
                     seed_until_swarm_done=bool(options["seed-until-swarm-done"]),
                     max_linger=options["max-linger"], status_fd=options["status-fd"],
                     stop_on_eof=bool(options["stop-on-eof"]),
                     hash_threads=options["hash-threads"], **common)


__all__ = ["PeerOptions", "RunConfig", "SeederOptions", "config_from", "parse_rate",
           "read_torrent_stream"]
