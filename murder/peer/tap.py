"""Options, configuration and the run lifecycle of ``murder-peer`` / ``murder-seeder``.

``SeederOptions``/``PeerOptions`` parse and validate; :func:`config_from` turns
them into a frozen :class:`RunConfig`; :class:`SwarmRun` is the Twisted
service that prepares storage, listens, announces and ends the process with
the right exit status (0 only for a verified payload).  ``seedertap`` and
``peertap`` are the modules twistd's plugins point at.
"""

from __future__ import annotations

import atexit
import math
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer, threads
from twisted.logger import Logger
from twisted.python import usage

from murder import metainfo
from murder.errors import MurderError, StorageError
from murder.peer.announcer import Announcer, AnnounceReply
from murder.peer.protocol import PeerFactory
from murder.peer.session import SwarmConfig, Swarm
from murder.peer import wire
from murder.peer.storage import DownloadStorage, SeedStorage
from murder.peer.wire import BLOCK_SIZE


#: Largest torrent read from a stream (as :func:`metainfo.load` allows for files).
MAX_STREAM_TORRENT = 64 * 1024 * 1024


def read_torrent_stream(stream) -> bytes:
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
        ["upload-slots", None, 1,
         "Peers sent to at the same moment, a piece per turn; every interested peer "
         "is unchoked and queued. 0 = all at once (TCP fair share).", int],
        ["pipeline", None, 256, "Most 16 KiB requests outstanding per peer.", int],
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
    optFlags = [["quiet", "q", "Only warnings and errors; no progress display."]]

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
    optParameters = [
        ["file", "f", None, "The payload: file, or directory of a multi-file torrent."],
        ["seed-budget", None, 1.0,
         "Once every piece has left once, serve pieces peers could get from each other "
         "until this many payload copies are uploaded in all (1: never).", float],
    ]
    optFlags = [
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
    optParameters = [
        ["destination", "d", None, "Directory; the payload lands as DIR/<torrent name>."],
        ["saveas", None, None, "Exact path for the payload (legacy scripts)."],
        ["seed-time", None, 30.0, "Seconds to keep seeding after completion.", float],
        ["max-linger", None, 300.0, "With --seed-until-swarm-done: most seconds to linger.",
         float],
        ["status-fd", None, None, "Write 'complete PATH' or 'failed REASON' to this fd.", int],
    ]
    optFlags = [["seed-until-swarm-done", None,
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
                     stop_on_eof=bool(options["stop-on-eof"]), **common)


def udp_client(reactor, urls: tuple[str, ...]):
    """The BEP 15 client when the torrent lists a ``udp://`` tracker, else None."""
    if not any(u.startswith("udp://") for u in urls):
        return None
    from murder.peer.udptracker import UDPTrackerClient

    return UDPTrackerClient(reactor)


def http_client(reactor, ca: str | None, urls: tuple[str, ...] = (),
                client_cert: str | None = None, client_key: str | None = None):
    """The announce client: the light :class:`PlainHTTP` when every tracker is
    ``http://``, else treq; with ``ca``, https trackers must present a
    certificate it signed, and with ``client_cert`` we present ours."""
    if ca is None and all(u.startswith(("http://", "udp://")) for u in urls):
        from murder.peer.httpget import PlainHTTP

        return PlainHTTP(reactor)
    import treq
    from treq.client import HTTPClient
    from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool

    if ca is None:
        return treq
    from twisted.internet.ssl import Certificate

    try:
        with open(ca, "rb") as f:
            root = Certificate.loadPEM(f.read())
    except (OSError, Exception) as e:
        raise MurderError(f"cannot load CA certificate {ca}: {e}") from None
    policy: Any = BrowserLikePolicyForHTTPS(trustRoot=root)
    if client_cert:
        policy = _client_cert_policy(root, client_cert, client_key)
    pool = HTTPConnectionPool(reactor)
    agent = Agent(reactor, contextFactory=policy, pool=pool)
    return _TreqClient(HTTPClient(agent))


def _client_cert_policy(root, cert_path: str, key_path: str | None):
    """An HTTPS policy that verifies the tracker against ``root`` and presents
    our certificate (for trackers started with ``--client-ca``)."""
    from twisted.internet.ssl import PrivateCertificate, optionsForClientTLS
    from twisted.web.iweb import IPolicyForHTTPS
    from zope.interface import implementer

    try:
        with open(cert_path, "rb") as f:
            pem = f.read()
        if key_path:
            with open(key_path, "rb") as f:
                pem += b"\n" + f.read()
        mine = PrivateCertificate.loadPEM(pem)
    except Exception as e:
        raise MurderError(f"cannot load client certificate {cert_path}: {e}") from None

    @implementer(IPolicyForHTTPS)
    class _Policy:
        def creatorForNetloc(self, hostname: bytes, port: int):  # noqa: N802
            return optionsForClientTLS(hostname.decode("ascii"), trustRoot=root,
                                       clientCertificate=mine)

    return _Policy()


class _TreqClient:
    """A treq ``HTTPClient`` with the ``content`` call the announcer makes
    (treq offers it as a module function, not as a client method)."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def get(self, url: str, **kwargs: Any) -> defer.Deferred:
        return self._client.get(url, **kwargs)

    @staticmethod
    def content(response: Any) -> defer.Deferred:
        import treq

        return treq.content(response)


class SwarmRun:
    """Runs one seeder or peer from start to exit status.

    A plain object with ``start``/``stop`` so the foreground command need not
    import twisted.application; :func:`make_service` adapts it for twistd."""

    log = Logger()

    def __init__(self, config: RunConfig, reactor=None, http=None) -> None:
        if reactor is None:
            from twisted.internet import reactor as _reactor
            reactor = _reactor
        self.config = config
        self.reactor = reactor
        self.http = http
        self.exit_code: int | None = None
        self.swarm: Swarm | None = None
        self.announcer: Announcer | None = None
        self.storage = None
        self._port = None
        self._linger = None
        self._progress = None
        self.failure_message: str | None = None
        self._status_fd = config.status_fd  # cleared once its one line is written
        self.finished = defer.Deferred()

    def start(self) -> None:
        d = defer.ensureDeferred(self._run())
        d.addErrback(self._failed)

    def stop(self) -> defer.Deferred:
        return defer.ensureDeferred(self._shutdown())

    async def _run(self) -> None:
        c = self.config
        if c.trust or os.environ.get("MURDER_TRUST"):
            from murder import trust  # imports cryptography: only when asked

            who = trust.enforce(c.meta, list(c.trust) or None)
            if who is not None:
                self.log.info("torrent signed by trusted key {who}", who=who)
        if self.http is None:
            self.http = http_client(self.reactor, c.ca, c.meta.trackers, c.client_cert,
                                    c.client_key)
        if c.role == "seeder":
            storage = SeedStorage(c.meta, c.path)
            storage.check()
            if not c.skip_verify:
                self.log.info("verifying {path}", path=c.path)
                await threads.deferToThreadPool(self.reactor, self.reactor.getThreadPool(),
                                                storage.verify_all)
            from murder.peer.wire import Bitfield
            have = Bitfield(c.meta.num_pieces, full=True)
        else:
            storage = DownloadStorage(c.meta, c.path)
            self.storage = storage
            have = await threads.deferToThreadPool(self.reactor, self.reactor.getThreadPool(),
                                                   storage.prepare)
            if have.count:
                self.log.info("resuming: {n} of {total} pieces already verified",
                              n=have.count, total=c.meta.num_pieces)
        self.storage = storage
        self.swarm = swarm = Swarm(c.meta, storage, have, self.reactor, c.swarm,
                                   on_complete=self._complete)
        try:
            # listenTCP, not an endpoint string: endpoints import pyOpenSSL,
            # a large share of start-up time for a process that only needs TCP.
            self._port = self.reactor.listenTCP(c.port, PeerFactory(swarm), interface=c.bind)
        except Exception as e:
            where = f"{c.bind or '*'}:{c.port}"
            raise MurderError(f"cannot listen on {where}: {e}") from None
        port = self._port.getHost().port
        self.announcer = Announcer(
            self.reactor, self.http, c.meta.trackers, c.meta.info_hash, swarm.peer_id, port,
            c.ip, swarm.stats, self._tracker_reply, tracker_timeout=c.tracker_timeout,
            udp=udp_client(self.reactor, c.meta.trackers),
        )
        swarm.start()
        self._start_progress()
        self.log.info("{role} for {name} ({size} bytes, {n} pieces) on port {port}",
                      role=c.role, name=c.meta.name, size=c.meta.total_length,
                      n=c.meta.num_pieces, port=port)
        swarm.done.addErrback(self._failed)
        if have.complete and c.role == "peer":
            self._complete()
        if not c.meta.trackers:
            raise MurderError("the torrent names no tracker")
        try:
            await self.announcer.start()
        except MurderError as e:
            if c.role == "peer" and swarm.is_seed:
                # The payload is verified and in place: the deploy succeeded;
                # only the seeding that would help others is lost.
                self.log.warn("{error}; the payload is complete, so this peer only "
                              "misses out on seeding", error=str(e))
                return
            raise

    def _tracker_reply(self, reply: AnnounceReply) -> None:
        if self.swarm is not None:
            self.swarm.add_peers(reply.peers)

    def _complete(self) -> None:
        c = self.config
        try:
            self.storage.finalize()
        except StorageError as e:
            self._failed(e)
            return
        if self.announcer is not None:
            self.announcer.completed()
        elapsed = self.reactor.seconds() - self.swarm.started_at
        self.log.info("complete: {path} verified ({size} bytes in {secs:.2f}s)", path=c.path,
                      size=c.meta.total_length, secs=elapsed)
        self._status(f"complete {c.path}")
        if c.seed_until_swarm_done:
            self._linger_started = self.reactor.seconds()
            self._linger = self.reactor.callLater(1.0, self._check_swarm_done)
        else:
            self._linger = self.reactor.callLater(c.seed_time, self._finish, 0)

    def _check_swarm_done(self) -> None:
        """Linger while anyone may still need us: exit once the tracker, asked
        within the last seconds, counts no leecher and no connection wants data."""
        swarm = self.swarm
        announcer = self.announcer
        now = self.reactor.seconds()
        waited = now - self._linger_started
        busy = any(conn.peer_interested or conn.upload_queue
                   for conn in swarm.connections.values())
        reply = announcer.last_reply if announcer else None
        fresh = reply is not None and now - announcer.last_reply_at < 2.5
        if waited >= self.config.max_linger or (
                not busy and (reply is None or (fresh and not reply.incomplete))):
            self._finish(0)
            return
        if announcer is not None and not fresh:
            announcer.refresh()
        self._linger = self.reactor.callLater(0.5, self._check_swarm_done)

    def _status(self, line: str) -> None:
        fd = self._status_fd
        if fd is None:
            return
        # One line, then the descriptor is closed: a reader sees EOF at once.
        self._status_fd = None
        try:
            os.write(fd, (line + "\n").encode())
            os.close(fd)
        except OSError:
            pass

    def _failed(self, failure) -> None:
        error = failure.value if hasattr(failure, "value") else failure
        if self.exit_code is not None:
            return
        if isinstance(error, MurderError):
            message = str(error)
            code = error.exit_code
        else:
            self.log.failure("unexpected error", failure)
            message = f"internal error: {error!r}"
            code = 1
        self.log.error("{role} failed: {message}", role=self.config.role, message=message)
        if self.config.role == "peer" and isinstance(self.storage, DownloadStorage):
            self.storage.discard()
        self._status(f"failed {message}")
        self.failure_message = message
        self._finish(code)

    def _finish(self, code: int) -> None:
        if self.exit_code is not None:
            return
        self.exit_code = code
        if self.reactor.running:
            self.reactor.stop()
        if not self.finished.called:
            self.finished.callback(code)

    async def _shutdown(self) -> None:
        if self._linger is not None and self._linger.active():
            self._linger.cancel()
        if self.swarm is not None:
            sw = self.swarm
            self.log.info(
                "totals: uploaded {up} bytes ({ratio:.2f}x the payload), downloaded {down}, "
                "wasted {wasted}, hash failures {fails}, refused requests {refused}",
                up=sw.uploaded, ratio=sw.uploaded / self.config.meta.total_length,
                down=sw.downloaded, wasted=sw.wasted, fails=sw.hash_failures,
                refused=sw.refused_requests)
        if self._progress is not None:
            self._progress.stop()
        if self.announcer is not None:
            try:
                await self.announcer.stop()
            except Exception:
                pass
        if self.swarm is not None:
            self.swarm.stop()
        if self._port is not None:
            await self._port.stopListening()
        if self.storage is not None:
            self.storage.close()
        if self.exit_code is None:
            # Stopped from outside (SIGTERM/SIGINT): the .part file stays for resume.
            self.exit_code = 0 if self.config.role == "seeder" or (
                self.swarm is not None and self.swarm.is_seed) else 1
            if self.exit_code:
                self.failure_message = "interrupted before the download completed"
                self._status("failed interrupted before the download completed")

    # -- progress
    def _start_progress(self) -> None:
        from murder.peer.progress import Progress

        self._progress = Progress(self.reactor, self.swarm, self.config, sys.stderr)
        self._progress.start()


def make_service(options: _CommonOptions):
    """``makeService`` for both plugins: the process exits with the run's status."""
    from twisted.application import service

    run = SwarmRun(config_from(options))

    class _RunService(service.Service):
        def startService(self) -> None:  # noqa: N802
            super().startService()
            run.start()

        def stopService(self) -> defer.Deferred:  # noqa: N802
            super().stopService()
            return run.stop()

    def exit_with_status() -> None:
        if run.exit_code:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(run.exit_code)

    # twistd has no exit-status hook: this runs after its own cleanup.
    atexit.register(exit_with_status)
    svc = _RunService()
    svc.run = run
    return svc


def _skip_tls_stack(config: RunConfig) -> None:
    """Keep pyOpenSSL out of a process that will never speak TLS.

    Twisted's TCP module imports pyOpenSSL (and with it ``cryptography`` and
    ``service_identity``) only to offer STARTTLS; that is about a quarter of a
    peer's start-up CPU, paid by every host of a deploy at the same moment.
    A missing module makes Twisted fall back to plain TCP, which is all a peer
    with ``http://`` trackers and no ``--ca`` uses.  Signed torrents verify
    with ``cryptography`` directly, which stays importable.
    """
    if config.ca is None and all(u.startswith("http://") for u in config.meta.trackers) \
            and "twisted.internet.tcp" not in sys.modules:
        sys.modules.setdefault("OpenSSL", None)  # type: ignore[arg-type]


def _stop_on_stdin_eof(reactor) -> None:
    """Stop the reactor (a clean stop, as SIGTERM) once stdin reaches EOF.

    A blocking read in a daemon thread, not a reactor reader: stdin may be a
    pipe shared with nothing else, but making it non-blocking could affect a
    descriptor the caller also holds.  Bytes read are ignored."""
    import threading

    def watch() -> None:
        try:
            while os.read(0, 4096):
                pass
        except OSError:
            pass
        reactor.callFromThread(stop)

    def stop() -> None:
        from twisted.internet.error import ReactorNotRunning

        try:
            reactor.stop()
        except ReactorNotRunning:
            pass

    threading.Thread(target=watch, name="stdin-eof", daemon=True).start()


def run_foreground(options: _CommonOptions) -> int:
    """Run in the foreground on the global reactor; return the exit status."""
    config = config_from(options)
    _skip_tls_stack(config)
    from twisted.internet import reactor
    from twisted.logger import globalLogBeginner, LogLevel, FilteringLogObserver, \
        LogLevelFilterPredicate, formatEvent

    level = LogLevel.warn if config.quiet else LogLevel.info
    prefix = f"murder {'seed' if config.role == 'seeder' else 'peer'}"
    tty = sys.stderr.isatty()  # log files get timestamps, a terminal does not

    def observer(event: dict) -> None:
        # Twisted's own factory start/stop chatter is noise for a deploy log.
        if event["log_level"] < LogLevel.warn and \
                not event.get("log_namespace", "").startswith("murder"):
            return
        text = formatEvent(event)
        if event.get("log_failure") is not None and event["log_level"] >= LogLevel.error:
            text += "\n" + event["log_failure"].getTraceback()
        from murder.peer.progress import clear_line
        clear_line(sys.stderr)
        stamp = "" if tty else time.strftime("%H:%M:%S", time.localtime(event["log_time"])) + \
            f".{int(event['log_time'] * 1000) % 1000:03d} "
        sys.stderr.write(f"{stamp}{prefix}: {text}\n")
        sys.stderr.flush()

    predicate = LogLevelFilterPredicate(defaultLogLevel=level)
    globalLogBeginner.beginLoggingTo([FilteringLogObserver(observer, [predicate])],
                                     redirectStandardIO=False)
    run = SwarmRun(config, reactor)
    # SIGHUP (an ssh session or screen going away) is a clean stop, like
    # SIGTERM, unless the caller chose to ignore it (the legacy shim's
    # detached seeding child must survive its terminal).
    import signal

    if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
        signal.signal(signal.SIGHUP, lambda *_: reactor.callFromThread(reactor.stop))
    if config.stop_on_eof:
        _stop_on_stdin_eof(reactor)
    reactor.callWhenRunning(run.start)
    reactor.addSystemEventTrigger("before", "shutdown", run.stop)
    reactor.run()
    code = run.exit_code if run.exit_code is not None else 1
    if code and run.failure_message and config.quiet:
        sys.stderr.write(f"{prefix}: {run.failure_message}\n")
    return code


__all__ = ["SeederOptions", "PeerOptions", "RunConfig", "SwarmRun", "config_from",
           "make_service", "run_foreground", "parse_rate"]
