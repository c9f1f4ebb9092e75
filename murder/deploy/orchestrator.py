"""The deploy itself, on Twisted: tracker + seeder here, one session per host.

:class:`Deployment` starts a tracker (unless ``--tracker`` names one) and a
seeder in this process, makes the torrent, and opens one session per host
(``ssh host sh -c 'murder peer --torrent - --stop-on-eof …'``) with the
torrent written to the session's stdin.  The peer's verdict comes back on the
session's stdout, its progress on stderr.  A verified host's session stays
open, so the host keeps seeding, until the deploy ends; then every session's
stdin is closed and each remote peer stops cleanly (its ``.part`` kept).
"""

from __future__ import annotations

import os
import shutil
import signal as _signal
import socket
import tempfile
from dataclasses import dataclass, field
from typing import Callable

from twisted.internet import defer, protocol, threads
from twisted.logger import Logger

from murder import bencode, metainfo
from murder.deploy import core
from murder.deploy.core import HostRecord
from murder.deploy.hosts import Target
from murder.deploy.transport import Transport, host_dest, peer_command, then_command
from murder.errors import MurderError

#: Seconds remote peers get to stop after their stdin closed, before the
#: local ssh clients are sent SIGTERM (which closes the sessions anyway).
STOP_GRACE = 10.0


@dataclass(frozen=True)
class DeployConfig:
    """Everything a deploy needs, validated (see ``murder deploy --help``)."""

    payload: str
    dest: str
    targets: tuple[Target, ...]
    transport: Transport = field(default_factory=Transport)
    announce_host: str | None = None
    tracker: str | None = None
    tracker_port: int = 0
    sign: str | None = None
    auth_secret: str | None = None
    remote_murder: str = "murder"
    parallel: int = 64
    retries: int = 2
    retry_delay: float = 1.0
    timeout: float | None = None
    then: str | None = None
    tracker_timeout: float = 60.0
    piece_length: int | None = None


class _Session(protocol.ProcessProtocol):
    """One process: a host's peer session or its ``--then`` command."""

    def __init__(self, on_out: Callable[[str], None], on_err: Callable[[str], None],
                 on_end: Callable[[int | None, int | None], None]) -> None:
        self._bufs = {1: b"", 2: b""}
        self._handlers = {1: on_out, 2: on_err}
        self._on_end = on_end
        self.ended = False

    def childDataReceived(self, fd: int, data: bytes) -> None:  # noqa: N802
        if fd not in self._bufs:
            return
        buf = self._bufs[fd] + data
        *lines, self._bufs[fd] = buf.split(b"\n")
        for line in lines:
            self._handlers[fd](line.decode("utf-8", "replace").rstrip("\r"))
        if len(self._bufs[fd]) > 65536:  # a runaway line: cut it
            self._handlers[fd](self._bufs[fd].decode("utf-8", "replace"))
            self._bufs[fd] = b""

    def processEnded(self, reason) -> None:  # noqa: N802
        for fd, rest in self._bufs.items():
            if rest:
                self._handlers[fd](rest.decode("utf-8", "replace"))
        self.ended = True
        value = reason.value
        self._on_end(getattr(value, "exitCode", None), getattr(value, "signal", None))

    def send(self, data: bytes) -> None:
        if not self.ended and self.transport is not None:
            self.transport.write(data)

    def close_stdin(self) -> None:
        if not self.ended and self.transport is not None:
            try:
                self.transport.closeStdin()
            except Exception:
                pass

    def signal(self, sig: str) -> None:
        if not self.ended and self.transport is not None:
            try:
                self.transport.signalProcess(sig)
            except Exception:
                pass


class Deployment:
    """Runs one deploy; :meth:`run` fires with the per-host records."""

    log = Logger()

    def __init__(self, config: DeployConfig, reactor, display=None) -> None:
        self.config = config
        self.reactor = reactor
        self.display = display
        self.records = [HostRecord(host=t.name) for t in config.targets]
        self._targets = dict(zip((r.host for r in self.records), config.targets))
        self._queue: list[HostRecord] = list(self.records)
        self._sessions: dict[str, _Session] = {}
        self._thens: dict[str, _Session] = {}
        self._verified_order: list[str] = []
        self._finishing = False
        self._done: defer.Deferred = defer.Deferred()
        self._timers: list = []
        self._workdir: str | None = None
        self._tracker_service = None
        self._seeder = None
        self.meta: metainfo.Metainfo | None = None
        self.torrent_bytes = b""
        self.started = reactor.seconds()
        self.interrupted_by: int | None = None
        self.announce_url: str | None = None

    # ------------------------------------------------------------ set-up
    def run(self) -> defer.Deferred:
        """Start; the Deferred fires with ``self.records`` once every remote
        process has ended and the local tracker and seeder have stopped."""
        d = defer.ensureDeferred(self._start())
        d.addErrback(self._setup_failed)
        return self._done

    def _say(self, record: HostRecord | None, text: str) -> None:
        if self.display is not None:
            self.display.event(record, text)

    async def _start(self) -> None:
        c = self.config
        if c.timeout:
            self._timers.append(self.reactor.callLater(c.timeout, self._timed_out))
        self._workdir = tempfile.mkdtemp(prefix="murder-deploy-")
        host = c.announce_host or "127.0.0.1"
        if c.tracker:
            announce = c.tracker
        else:
            port = c.tracker_port or _free_port()
            wrapped = f"[{host}]" if ":" in host else host
            announce = f"http://{wrapped}:{port}/announce"
            self._start_tracker(port)
        self.announce_url = announce
        # Sessions open now: ssh handshakes and the remote peers' start-up
        # overlap hashing and the seeder's start; each peer waits on stdin.
        self._pump()
        self._say(None, f"hashing {c.payload}")
        torrent = await threads.deferToThreadPool(
            self.reactor, self.reactor.getThreadPool(),
            lambda: metainfo.create(c.payload, announce, piece_length=c.piece_length))
        if c.auth_secret:
            from murder import trust
            from murder.tracker.auth import load_secret

            torrent = trust.authorise_announce(torrent, load_secret(c.auth_secret))
        if c.sign:
            from murder import trust

            torrent = trust.sign_torrent(torrent, trust.load_private_key(c.sign))
        meta = metainfo.parse(bencode.encode(torrent))
        path = os.path.join(self._workdir, "payload.torrent")
        metainfo.write_atomic(path, meta.encode())
        await self._start_seeder(path, host)
        self.meta = meta
        self.torrent_bytes = meta.encode()
        self._say(None, f"torrent {meta.info_hash.hex()[:16]}: {meta.total_length} "
                        f"bytes, {meta.num_pieces} pieces; tracker {announce}; "
                        f"seeding from {host}")
        if self.display is not None:
            self.display.start(self)
        for session in list(self._sessions.values()):
            session.send(self.torrent_bytes)
        self._pump()
        self._check_done()

    def _start_tracker(self, port: int) -> None:
        from murder.tracker.tap import TrackerConfig, buildService

        secrets = (self.config.auth_secret,) if self.config.auth_secret else ()
        config = TrackerConfig(listen=f"tcp:{port}", dfile=None, auth_secrets=secrets)
        svc = buildService(config, self.reactor)
        try:
            svc.privilegedStartService()
        except Exception as e:
            reason = getattr(e, "socketError", None) or e
            raise MurderError(f"cannot start the tracker on port {port}: {reason}") from None
        svc.startService()
        self._tracker_service = svc

    async def _start_seeder(self, torrent_path: str, host: str) -> None:
        from murder.peer.tap import SeederOptions, SwarmRun, config_from

        options = SeederOptions()
        options.parseOptions(["--torrent", torrent_path, "--file", self.config.payload,
                              "--skip-verify", "--ip", host, "--quiet",
                              "--tracker-timeout", str(self.config.tracker_timeout)])
        run = SwarmRun(config_from(options), self.reactor)
        self._seeder = run
        run.start()
        # Hosts announce right away: the seeder must be known to the tracker
        # first, or they would wait a whole announce interval to hear of it.
        deadline = self.reactor.seconds() + self.config.tracker_timeout
        while True:
            if run.exit_code is not None:
                raise MurderError(f"the seeder failed: {run.failure_message}")
            if run.announcer is not None and run.announcer.last_reply is not None:
                return
            if self.reactor.seconds() > deadline:
                raise MurderError(f"the seeder could not announce to {self.announce_url} "
                                  f"within {self.config.tracker_timeout:g}s")
            await _sleep(self.reactor, 0.05)

    def _setup_failed(self, failure) -> None:
        error = failure.value
        message = str(error) if isinstance(error, MurderError) else f"internal error: {error!r}"
        if not isinstance(error, MurderError):
            self.log.failure("deploy set-up failed", failure)
        for r in self.records:
            r.fail(core.PEER_FAILED, f"not started: {message}", self.reactor.seconds())
        self.setup_error = message
        self._finish()

    # ------------------------------------------------------------ scheduling
    def _live(self) -> int:
        return len(self._sessions)

    def _pump(self) -> None:
        """Open sessions while slots are free; when hosts wait and every slot
        is taken, release the longest-verified host (its seeding ends)."""
        if self._finishing:
            return
        while self._queue:
            if self._live() >= self.config.parallel:
                self._release_one()
                if self._live() >= self.config.parallel:
                    return
                continue
            self._open(self._queue.pop(0))

    def _release_one(self) -> None:
        for host in self._verified_order:
            s = self._sessions.get(host)
            if s is not None and host not in self._thens:
                self._verified_order.remove(host)
                s.close_stdin()
                # Its slot frees when the session ends (processEnded → _pump).
                return

    def _open(self, record: HostRecord) -> None:
        c = self.config
        target = self._targets[record.host]
        record.attempts += 1
        record.state = "connecting"
        record.last_words = []
        record.peer_said = False
        record.kind = record.reason = None
        if record.started is None:
            record.started = self.reactor.seconds()
        dest = host_dest(c.dest, target)
        left = None
        if c.timeout:
            left = max(5.0, c.timeout - (self.reactor.seconds() - self.started))
        command = peer_command(c.remote_murder, dest, min(c.tracker_timeout, left or 1e9))
        argv = c.transport.argv(target, command)
        session = _Session(lambda line: self._status(record, line),
                           lambda line: self._stderr(record, line),
                           lambda code, sig: self._ended(record, code, sig))
        self._sessions[record.host] = session
        try:
            self.reactor.spawnProcess(session, argv[0], argv, env=os.environ.copy())
        except OSError as e:
            del self._sessions[record.host]
            record.fail(core.SSH_ERROR, f"cannot run {argv[0]}: {e}", self.reactor.seconds())
            self._say(record, record.reason)
            return
        if self.torrent_bytes:
            session.send(self.torrent_bytes)

    def _status(self, record: HostRecord, line: str) -> None:
        verdict = record.status_line(line)
        if verdict == "complete":
            self._verified(record)
        elif verdict == "failed":
            record.fail(record.kind, record.reason, self.reactor.seconds())
            self._say(record, record.reason)
            self._check_done()

    def _stderr(self, record: HostRecord, line: str) -> None:
        before = record.state
        record.log_line(line)
        if record.peer_said and before == "connecting":
            record.state = "running"

    def _verified(self, record: HostRecord) -> None:
        if record.final:
            return
        target = self._targets[record.host]
        if self.config.then and not self._finishing:
            record.state = "then"
            self._say(record, f"verified {record.path}; running --then")
            argv = self.config.transport.argv(
                target, then_command(self.config.then, host_dest(self.config.dest, target),
                                     record.path or ""))
            words: list[str] = []

            def keep(line: str) -> None:
                if line.strip():
                    words[:] = (words + [line.strip()])[-5:]

            def then_ended(code: int | None, sig: int | None) -> None:
                self._thens.pop(record.host, None)
                if code == 0:
                    record.succeed(self.reactor.seconds())
                    self._verified_order.append(record.host)
                    self._say(record, "verified, --then succeeded")
                else:
                    record.fail(core.THEN_FAILED, core.then_failure(code, sig, words),
                                self.reactor.seconds())
                    self._say(record, record.reason)
                self._check_done()
                self._pump()

            then = _Session(keep, keep, then_ended)
            self._thens[record.host] = then
            self.reactor.spawnProcess(then, argv[0], argv, env=os.environ.copy())
            then.close_stdin()
            return
        record.succeed(self.reactor.seconds())
        self._verified_order.append(record.host)
        self._say(record, f"verified {record.path}")
        self._check_done()
        self._pump()

    def _ended(self, record: HostRecord, code: int | None, sig: int | None) -> None:
        self._sessions.pop(record.host, None)
        if record.host in self._verified_order:
            self._verified_order.remove(record.host)
        if not record.final and not record.payload_verified:
            kind, reason, retry = core.classify_exit(record, code, sig,
                                                     self.config.remote_murder)
            if retry and not self._finishing and record.attempts <= self.config.retries:
                record.state = "waiting"
                self._say(record, f"{reason}; retry {record.attempts} of "
                                  f"{self.config.retries}")
                delay = self.config.retry_delay * record.attempts

                def again() -> None:
                    if not self._finishing:
                        self._queue.append(record)
                        self._pump()
                self._timers.append(self.reactor.callLater(delay, again))
            else:
                record.fail(kind, reason, self.reactor.seconds())
                self._say(record, reason)
        elif record.state == "then" and not self._finishing:
            pass  # the payload is verified; --then decides
        self._check_done()
        self._pump()
        self._maybe_stopped()

    # ------------------------------------------------------------ ending
    def _check_done(self) -> None:
        if not self._finishing and self.meta is not None and \
                all(r.final for r in self.records):
            self._finish()

    def _timed_out(self) -> None:
        if self._finishing:
            return
        now = self.reactor.seconds()
        for r in self.records:
            r.fail(core.TIMED_OUT, f"timed out after {self.config.timeout:g}s "
                                   f"({100 * r.fraction:.0f}% done, {r.state})", now)
        self._finish()

    def interrupt(self, signum: int) -> None:
        """SIGINT/SIGTERM: every host not verified yet fails as interrupted."""
        if self.interrupted_by is None:
            self.interrupted_by = signum
        if self._finishing:
            return
        name = _signal.Signals(signum).name if signum in _signal.Signals._value2member_map_ \
            else str(signum)
        now = self.reactor.seconds()
        for r in self.records:
            r.fail(core.INTERRUPTED, f"interrupted by {name} ({100 * r.fraction:.0f}% done)",
                   now)
        self._finish()

    def _finish(self) -> None:
        """Close every session's stdin (remote peers stop cleanly), then
        escalate to SIGTERM/SIGKILL of the local ssh clients if they linger."""
        if self._finishing:
            return
        self._finishing = True
        self._queue.clear()
        for t in self._timers:
            if t.active():
                t.cancel()
        for s in list(self._sessions.values()) + list(self._thens.values()):
            s.close_stdin()
        self._kill_timer = self.reactor.callLater(STOP_GRACE, self._escalate, "TERM")
        self._maybe_stopped()

    def _escalate(self, sig: str) -> None:
        for s in list(self._sessions.values()) + list(self._thens.values()):
            s.signal(sig)
        if sig == "TERM":
            self._kill_timer = self.reactor.callLater(5.0, self._escalate, "KILL")

    def _maybe_stopped(self) -> None:
        if not self._finishing or self._sessions or self._thens or self._done.called \
                or getattr(self, "_stopping", False):
            return
        self._stopping = True
        if self._kill_timer.active():
            self._kill_timer.cancel()
        defer.ensureDeferred(self._stop_local()).addBoth(lambda _: self._done.callback(
            self.records))

    async def _stop_local(self) -> None:
        if self._seeder is not None:
            try:
                await self._seeder.stop()
            except Exception:
                self.log.failure("stopping the seeder")
        if self._tracker_service is not None:
            try:
                await defer.maybeDeferred(self._tracker_service.stopService)
            except Exception:
                self.log.failure("stopping the tracker")
        if self._workdir:
            shutil.rmtree(self._workdir, ignore_errors=True)
        if self.display is not None:
            self.display.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def _sleep(reactor, seconds: float) -> defer.Deferred:
    d: defer.Deferred = defer.Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d
