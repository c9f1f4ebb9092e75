"""The tracker's state as a service: dfile, expiry, allowed-dir rescans, saves.

:class:`TrackerStateService` owns the :class:`~murder.tracker.store.PeerStore`
for the process: it loads the dfile at start, runs the periodic jobs (each
survives one failing run) on an injected clock, and saves on stop.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Callable

from twisted.application import service
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from murder import metainfo
from murder.errors import MetainfoError
from murder.tracker.store import PeerStore, TorrentInfo, load_dfile, save_dfile

if TYPE_CHECKING:
    from murder.tracker.options import TrackerConfig

log = Logger()


class AllowedDir:
    """Scans a directory of torrents; files unchanged since the last scan are not re-read."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._seen: dict[str, tuple[tuple[int, int], bytes | None, TorrentInfo | None]] = {}

    def scan(self) -> dict[bytes, TorrentInfo]:
        """``{info_hash: TorrentInfo}`` of the loadable ``*.torrent`` files."""
        seen: dict[str, tuple[tuple[int, int], bytes | None, TorrentInfo | None]] = {}
        with os.scandir(self.path) as entries:
            for entry in entries:
                if not entry.name.endswith(".torrent") or not entry.is_file():
                    continue
                stat = entry.stat()
                stamp = (stat.st_mtime_ns, stat.st_size)
                old = self._seen.get(entry.path)
                if old is not None and old[0] == stamp:
                    seen[entry.path] = old
                    continue
                try:
                    meta = metainfo.load(entry.path)
                except MetainfoError as e:
                    log.warn("ignoring broken torrent {path}: {error}", path=entry.path,
                             error=str(e))
                    seen[entry.path] = (stamp, None, None)
                    continue
                seen[entry.path] = (stamp, meta.info_hash,
                                    TorrentInfo(meta.name, meta.total_length))
        added = len(set(seen) - set(self._seen))
        if added or len(seen) != len(self._seen):
            log.info("allowed dir {path}: {count} torrent files", path=self.path,
                     count=len(seen))
        self._seen = seen
        return {ih: info for _, ih, info in seen.values() if ih is not None and info}


def _guarded(what: str, job: Callable[[], Any]) -> Callable[[], None]:
    """Wrap a periodic job so one failing run is logged and the loop lives on."""
    def run() -> None:
        try:
            job()
        except Exception:
            log.failure("periodic {what} failed; will retry", what=what)
    return run


class TrackerStateService(service.Service):
    """Owns the store: loads the dfile, runs expiry/rescans/saves, saves on stop."""

    name = "tracker-state"  # type: ignore[assignment]  # Twisted types it None

    def __init__(self, store: PeerStore, config: TrackerConfig, clock: IReactorTime,
                 save_timer: Any = None) -> None:
        self.store = store
        self.config = config
        self.clock = clock
        #: A prometheus_client Histogram (or None) timing each dfile save.
        self.save_timer = save_timer
        self.allowed_dir = AllowedDir(config.allowed_dir) if config.allowed_dir else None
        self._loops: list[LoopingCall] = []

    def rescan(self) -> None:
        if self.allowed_dir is not None:
            self.store.set_allowed(self.allowed_dir.scan())

    def save(self) -> None:
        if self.config.dfile:
            if self.save_timer is None:
                save_dfile(self.store, self.config.dfile)
            else:
                with self.save_timer.time():
                    save_dfile(self.store, self.config.dfile)

    def startService(self) -> None:  # noqa: N802
        super().startService()
        _guarded("allowed-dir scan", self.rescan)()
        if self.config.dfile:
            load_dfile(self.store, self.config.dfile)
        jobs: list[tuple[str, Callable[[], object], float]] = [
            ("expiry", self.store.expire, self.config.expire_interval)]
        if self.config.dfile:
            jobs.append(("dfile save", self.save, self.config.save_interval))
        if self.allowed_dir is not None:
            jobs.append(("allowed-dir scan", self.rescan, self.config.allowed_rescan))
        for what, job, every in jobs:
            loop = LoopingCall(_guarded(what, job))
            loop.clock = self.clock
            loop.start(every, now=False)
            self._loops.append(loop)

    def stopService(self) -> None:  # noqa: N802
        super().stopService()
        for loop in self._loops:
            if loop.running:
                loop.stop()
        self._loops = []
        if self.config.dfile:
            try:
                self.save()
                log.info("saved dfile {path}: {torrents} torrents, {peers} peers",
                         path=self.config.dfile, torrents=len(self.store.torrents),
                         peers=self.store.peer_count)
            except OSError as e:
                log.error("cannot save dfile {path}: {error}", path=self.config.dfile,
                          error=e.strerror or str(e))

__all__ = ["AllowedDir", "TrackerStateService"]
