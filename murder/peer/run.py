"""The life of one seeder or peer run, from start to exit status.

:class:`SwarmRun` prepares storage (verify or resume), listens, announces,
and ends the run with the right status: 0 only for a payload verified and in
place.  It writes the one status-fd line (``complete PATH`` / ``failed
REASON``), lingers as configured after completion, and discards a partial
download on failure.  It takes its reactor (and optionally its HTTP client
and the way blocking work leaves the reactor thread) as arguments, so its
tests run on a fake reactor; :mod:`murder.peer.tap` adapts it to twistd and
:mod:`murder.runner` to the foreground.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable

from twisted.internet import defer, threads
from twisted.logger import Logger

from murder.errors import MurderError, StorageError
from murder.peer.announcer import Announcer, AnnounceReply
from murder.peer.httpclients import http_client, udp_client
from murder.peer.options import RunConfig
from murder.peer.progress import Progress
from murder.peer.protocol import PeerFactory, TCPDialer
from murder.peer.session import Swarm
from murder.peer.storage import DownloadStorage, PieceWriter, SeedStorage
from murder.peer.wire import Bitfield


class SwarmRun:
    """Runs one seeder or peer from start to exit status.

    A plain object with ``start``/``stop`` so the foreground command need not
    import twisted.application; :func:`murder.peer.tap.make_service` adapts it
    for twistd.  :attr:`finished` fires with the exit status."""

    log = Logger()

    def __init__(self, config: RunConfig, reactor: Any, http: Any = None,
                 blocking: Callable[..., defer.Deferred[Any]] | None = None) -> None:
        self.config = config
        self.reactor = reactor
        self.http = http
        #: Runs a blocking call (hashing a payload) off the reactor thread.
        self._blocking = blocking or (lambda f: threads.deferToThreadPool(
            reactor, reactor.getThreadPool(), f))
        self.exit_code: int | None = None
        self.swarm: Swarm | None = None
        self.announcer: Announcer | None = None
        self.storage: SeedStorage | DownloadStorage | None = None
        self._port: Any = None
        #: ``--hash-threads``: the PieceWriter and its thread pool, or None.
        self.writer: Any = None
        self._pool: Any = None
        self._linger: Any = None
        self._linger_started = 0.0
        self._progress: Progress | None = None
        self.failure_message: str | None = None
        self._status_fd = config.status_fd  # cleared once its one line is written
        self.finished: defer.Deferred[int] = defer.Deferred()

    def start(self) -> None:
        d = defer.ensureDeferred(self._run())
        d.addErrback(self._failed)

    def stop(self) -> defer.Deferred[None]:
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
        storage: SeedStorage | DownloadStorage
        if c.role == "seeder":
            storage = seed = SeedStorage(c.meta, c.path)
            seed.check()
            if not c.skip_verify:
                self.log.info("verifying {path}", path=c.path)
                await self._blocking(seed.verify_all)
            have = Bitfield(c.meta.num_pieces, full=True)
        else:
            storage = download = DownloadStorage(c.meta, c.path)
            self.storage = storage
            have = await self._blocking(download.prepare)
            if have.count:
                self.log.info("resuming: {n} of {total} pieces already verified",
                              n=have.count, total=c.meta.num_pieces)
        self.storage = storage
        # Upload turns need a small kernel send buffer (see SwarmConfig.send_buffer).
        send_buffer = c.swarm.send_buffer if c.swarm.upload_slots else 0
        dialer = TCPDialer(self.reactor, c.swarm.connect_timeout, send_buffer)
        writer = None
        if c.hash_threads and not have.complete:
            writer = self._start_writer(storage, c.hash_threads)
        self.swarm = swarm = Swarm(c.meta, storage, have, self.reactor, c.swarm,
                                   on_complete=self._complete, dialer=dialer, writer=writer)
        try:
            # listenTCP, not an endpoint string: endpoints import pyOpenSSL,
            # a large share of start-up time for a process that only needs TCP.
            self._port = self.reactor.listenTCP(c.port, PeerFactory(swarm, send_buffer),
                                                interface=c.bind)
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
        swarm.failure.addErrback(self._failed)
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
            self.swarm.set_near(reply.near)  # rack-aware tracker: near before far
            self.swarm.add_peers(reply.peers)

    def _complete(self) -> None:
        c = self.config
        assert isinstance(self.storage, DownloadStorage) and self.swarm is not None
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
        assert swarm is not None
        now = self.reactor.seconds()
        waited = now - self._linger_started
        busy = any(conn.peer_interested or conn.upload_queue
                   for conn in swarm.connections.values())
        reply = announcer.last_reply if announcer else None
        fresh = announcer is not None and reply is not None and \
            now - announcer.last_reply_at < 2.5
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

    def _failed(self, failure: Any) -> None:
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
                refused=sw.uploads.refused_requests)
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
            await defer.maybeDeferred(self._port.stopListening)
        if self.writer is not None:
            # Writes in flight land (or fail) before the file is closed.
            await self.writer.drain()
        if self._pool is not None:
            self._pool.stop()
            self._pool = None
        if self.storage is not None:
            self.storage.close()
        if self.exit_code is None:
            # Stopped from outside (SIGTERM/SIGINT): the .part file stays for resume.
            self.exit_code = 0 if self.config.role == "seeder" or (
                self.swarm is not None and self.swarm.is_seed) else 1
            if self.exit_code:
                self.failure_message = "interrupted before the download completed"
                self._status("failed interrupted before the download completed")

    def _start_writer(self, storage: Any, threads: int) -> Any:
        """A :class:`PieceWriter` on a pool of its own (not the reactor's, which
        name resolution and the start-up verify use), stopped at shutdown."""
        from twisted.python.threadpool import ThreadPool

        self._pool = ThreadPool(minthreads=threads, maxthreads=threads, name="murder-pieces")
        self._pool.start()
        self.writer = PieceWriter(storage, self.config.meta.pieces, reactor=self.reactor,
                                  threadpool=self._pool)
        return self.writer

    # -- progress
    def _start_progress(self) -> None:
        self._progress = Progress(self.reactor, self.swarm, self.config, sys.stderr)
        self._progress.start()


__all__ = ["SwarmRun"]
