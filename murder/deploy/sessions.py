"""The per-host half of a deploy: one session per host, slots, retries, ``--then``.

:class:`HostSessions` opens ``ssh host sh -c 'murder peer --torrent - …'``
for each host while ``--parallel`` slots are free, sends it the torrent,
reads its verdict (stdout) and progress (stderr) into the host's
:class:`~murder.deploy.core.HostRecord`, retries a session that failed for a
retryable reason, runs ``--then`` on a verified host, and frees a slot by
ending the longest-verified host's seeding when others wait.  It knows
nothing of the tracker, the seeder or how the deploy ends; it tells the
:class:`~murder.deploy.orchestrator.Deployment` through ``changed`` whenever
a host's state or a process's life changed, and the deployment decides.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Callable

from twisted.internet import protocol
from twisted.python.failure import Failure

from murder.deploy import core
from murder.deploy.core import HostRecord
from murder.deploy.transport import host_dest, peer_command, then_command

if TYPE_CHECKING:
    from murder.deploy.orchestrator import DeployConfig


class SessionProcess(protocol.ProcessProtocol):
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

    def processEnded(self, reason: Failure) -> None:  # noqa: N802
        for fd, rest in self._bufs.items():
            if rest:
                self._handlers[fd](rest.decode("utf-8", "replace"))
        self.ended = True
        value = reason.value
        self._on_end(getattr(value, "exitCode", None), getattr(value, "signal", None))

    def send(self, data: bytes) -> None:
        """Write to the process's stdin, unless it has ended."""
        if not self.ended and self.transport is not None:
            self.transport.write(data)

    def close_stdin(self) -> None:
        """End the process's stdin: a remote peer run with ``--stop-on-eof`` stops."""
        if not self.ended and self.transport is not None:
            try:
                self.transport.closeStdin()
            except Exception:
                pass

    def signal(self, sig: str) -> None:
        """Signal the local process (``TERM``/``KILL``), unless it has ended."""
        if not self.ended and self.transport is not None:
            try:
                self.transport.signalProcess(sig)
            except Exception:
                pass


class HostSessions:
    """Every host's session: opened while slots are free, retried, released."""

    def __init__(self, config: DeployConfig, reactor: Any, records: list[HostRecord],
                 started: float, say: Callable[[HostRecord | None, str], None],
                 changed: Callable[[], None]) -> None:
        self.config = config
        self.reactor = reactor
        self.started = started
        #: Sent to every session on its stdin; empty until the torrent is made.
        self.torrent_bytes = b""
        self._say = say
        self._changed = changed
        self._targets = dict(zip((r.host for r in records), config.targets))
        self._queue: list[HostRecord] = list(records)
        self._sessions: dict[str, SessionProcess] = {}
        self._thens: dict[str, SessionProcess] = {}
        self._verified_order: list[str] = []
        self._retries: list[Any] = []
        self._stopping = False

    @property
    def idle(self) -> bool:
        """No session and no ``--then`` command is running."""
        return not self._sessions and not self._thens

    def send_torrent(self, torrent: bytes) -> None:
        """The torrent is made: send it to every open session and to those opened later."""
        self.torrent_bytes = torrent
        for session in list(self._sessions.values()):
            session.send(torrent)
        self.pump()

    def pump(self) -> None:
        """Open sessions while slots are free; when hosts wait and every slot
        is taken, release the longest-verified host (its seeding ends)."""
        if self._stopping:
            return
        while self._queue:
            if len(self._sessions) >= self.config.parallel:
                self._release_one()
                if len(self._sessions) >= self.config.parallel:
                    return
                continue
            self._open(self._queue.pop(0))

    def stop(self) -> None:
        """Open nothing more and close every stdin (remote peers stop cleanly)."""
        self._stopping = True
        self._queue.clear()
        for t in self._retries:
            if t.active():
                t.cancel()
        for s in self._processes():
            s.close_stdin()

    def signal_all(self, sig: str) -> None:
        """Signal every local ssh client (or ``--then`` command) still running."""
        for s in self._processes():
            s.signal(sig)

    def _processes(self) -> list[SessionProcess]:
        return list(self._sessions.values()) + list(self._thens.values())

    def _release_one(self) -> None:
        for host in self._verified_order:
            s = self._sessions.get(host)
            if s is not None and host not in self._thens:
                self._verified_order.remove(host)
                s.close_stdin()
                # Its slot frees when the session ends (processEnded → pump).
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
        session = SessionProcess(lambda line: self._status(record, line),
                                 lambda line: self._stderr(record, line),
                                 lambda code, sig: self._ended(record, code, sig))
        self._sessions[record.host] = session
        try:
            self.reactor.spawnProcess(session, argv[0], argv, env=os.environ.copy())
        except OSError as e:
            del self._sessions[record.host]
            record.fail(core.SSH_ERROR, f"cannot run {argv[0]}: {e}", self.reactor.seconds())
            self._say(record, record.reason or "")
            return
        if self.torrent_bytes:
            session.send(self.torrent_bytes)

    def _status(self, record: HostRecord, line: str) -> None:
        verdict = record.status_line(line)
        if verdict == "complete":
            self._verified(record)
        elif verdict == "failed":
            record.fail(record.kind or core.PEER_FAILED, record.reason or "",
                        self.reactor.seconds())
            self._say(record, record.reason or "")
            self._changed()

    def _stderr(self, record: HostRecord, line: str) -> None:
        before = record.state
        record.log_line(line)
        if record.peer_said and before == "connecting":
            record.state = "running"

    def _verified(self, record: HostRecord) -> None:
        if record.final:
            return
        if self.config.then and not self._stopping:
            self._run_then(record, self.config.then)
            return
        record.succeed(self.reactor.seconds())
        self._verified_order.append(record.host)
        self._say(record, f"verified {record.path}")
        self._changed()
        self.pump()

    def _run_then(self, record: HostRecord, then: str) -> None:
        """Run ``--then`` on a verified host; its exit status decides the host."""
        target = self._targets[record.host]
        record.state = "then"
        self._say(record, f"verified {record.path}; running --then")
        argv = self.config.transport.argv(
            target, then_command(then, host_dest(self.config.dest, target), record.path or ""))
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
                self._say(record, record.reason or "")
            self._changed()
            self.pump()

        process = SessionProcess(keep, keep, then_ended)
        self._thens[record.host] = process
        self.reactor.spawnProcess(process, argv[0], argv, env=os.environ.copy())
        process.close_stdin()

    def _ended(self, record: HostRecord, code: int | None, sig: int | None) -> None:
        self._sessions.pop(record.host, None)
        if record.host in self._verified_order:
            self._verified_order.remove(record.host)
        if not record.final and not record.payload_verified:
            kind, reason, retry = core.classify_exit(record, code, sig,
                                                     self.config.remote_murder)
            if retry and not self._stopping and record.attempts <= self.config.retries:
                self._retry(record, reason)
            else:
                record.fail(kind, reason, self.reactor.seconds())
                self._say(record, reason)
        self._changed()
        self.pump()

    def _retry(self, record: HostRecord, reason: str) -> None:
        record.state = "waiting"
        self._say(record, f"{reason}; retry {record.attempts} of {self.config.retries}")
        delay = self.config.retry_delay * record.attempts

        def again() -> None:
            if not self._stopping:
                self._queue.append(record)
                self.pump()
        self._retries.append(self.reactor.callLater(delay, again))


__all__ = ["HostSessions", "SessionProcess"]
