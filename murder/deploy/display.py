"""Live progress of a deploy: one redrawn line on a terminal, timestamped lines otherwise."""

from __future__ import annotations

import time

from typing import TYPE_CHECKING, Any, TextIO

from twisted.internet import task
from twisted.logger import (FilteringLogObserver, ILogObserver, LogLevel,
                            LogLevelFilterPredicate, formatEvent, globalLogBeginner)
from zope.interface import provider

from murder.deploy import core

if TYPE_CHECKING:
    from murder.deploy.orchestrator import Deployment


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "ETA ?"
    seconds = int(seconds + 0.5)
    return f"ETA {seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"ETA {seconds}s"


def progress_text(stats: dict[str, Any], elapsed: float) -> str:
    """The progress line (pure: tests feed it an :meth:`Aggregate.update` dict)."""
    text = (f"{stats['done']}/{stats['total']} done, {stats['failed']} failed, "
            f"{stats['active']} in progress  {stats['rate'] / 2**20:.1f} MiB/s  "
            f"{_eta(stats['eta']) if stats['active'] else ''}  t={elapsed:.0f}s")
    if stats["slowest"]:
        text += "  slowest: " + ", ".join(f"{h} {100 * f:.0f}%" for h, f, _ in stats["slowest"])
    return text


class Display:
    """Writes deploy progress to ``stream`` (a terminal gets a redrawn line)."""

    def __init__(self, clock: Any, stream: TextIO, quiet: bool = False,
                 interval: float | None = None) -> None:
        self.clock = clock
        self.stream = stream
        self.quiet = quiet
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.interval = interval or (0.5 if self.tty else 5.0)
        self._deployment: Deployment | None = None
        self._aggregate: core.Aggregate | None = None
        self._call = task.LoopingCall(self.tick)
        self._call.clock = clock
        self._drawn = False

    def _write_line(self, text: str) -> None:
        if self.tty:
            if self._drawn:
                self.stream.write("\r\x1b[K")
                self._drawn = False
            self.stream.write(text + "\n")
        else:
            stamp = time.strftime("%H:%M:%S")
            self.stream.write(f"{stamp} {text}\n")
        self.stream.flush()

    def event(self, record: core.HostRecord | None, text: str) -> None:
        """A host's news (verified, failed, retrying) or the deploy's own."""
        if self.quiet and (record is None or record.state != core.FAILED):
            return
        self._write_line(f"{record.host}: {text}" if record is not None else text)
        if self._drawn is False and self.tty and self._deployment is not None:
            self.tick()

    def start(self, deployment: Deployment) -> None:
        """The torrent is made: show the deploy's progress from now on."""
        assert deployment.meta is not None
        self._deployment = deployment
        self._aggregate = core.Aggregate(deployment.meta.total_length)
        if not self.quiet:
            self._call.start(self.interval, now=False)

    def tick(self) -> None:
        d = self._deployment
        if d is None or self._aggregate is None or self.quiet:
            return
        stats = self._aggregate.update(d.records, self.clock.seconds())
        text = progress_text(stats, self.clock.seconds() - d.started)
        if self.tty:
            self.stream.write("\r\x1b[K" + text)
            self._drawn = True
            self.stream.flush()
        else:
            self._write_line(text)

    def stop(self) -> None:
        if self._call.running:
            self._call.stop()
        if self.tty and self._drawn:
            self.stream.write("\r\x1b[K")
            self._drawn = False
            self.stream.flush()


def log_warnings(stream: TextIO) -> None:
    """Library warnings (seeder, tracker) as one line each; no info chatter."""

    @provider(ILogObserver)
    def observer(event: dict[str, Any]) -> None:
        stream.write(f"murder deploy: {formatEvent(event)}\n")
        stream.flush()

    predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.warn)
    globalLogBeginner.beginLoggingTo([FilteringLogObserver(observer, [predicate])],
                                     redirectStandardIO=False)
