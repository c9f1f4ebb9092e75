"""Progress display: one redrawn line on a terminal, periodic log lines otherwise."""

from __future__ import annotations

from twisted.internet import task
from twisted.logger import Logger

from murder.runner import clear_line


class Progress:
    """Reports a swarm's percent, rates and peers every interval."""

    log = Logger()

    def __init__(self, clock, swarm, config, stream) -> None:
        self.clock = clock
        self.swarm = swarm
        self.config = config
        self.stream = stream
        self.tty = bool(getattr(stream, "isatty", lambda: False)()) and not config.quiet
        self._call = task.LoopingCall(self._show)
        self._call.clock = clock
        self._last = (clock.seconds(), 0, 0)
        self._quiet_ticks = 0

    def start(self) -> None:
        interval = self.config.progress_interval or (0.5 if self.tty else 5.0)
        self._call.start(interval, now=False).addErrback(
            lambda f: self.log.failure("progress display failed", f))

    def stop(self) -> None:
        if self._call.running:
            self._call.stop()
        if self.tty:
            clear_line(self.stream)
            self.stream.flush()

    def line(self) -> str:
        swarm = self.swarm
        now = self.clock.seconds()
        then, down, up = self._last
        elapsed = max(now - then, 1e-6)
        down_rate = (swarm.downloaded - down) / elapsed
        up_rate = (swarm.uploaded - up) / elapsed
        self._last = (now, swarm.downloaded, swarm.uploaded)
        total = swarm.meta.num_pieces
        pct = 100.0 * swarm.have.count / total
        return (f"{swarm.meta.name}: {pct:5.1f}% ({swarm.have.count}/{total} pieces)  "
                f"down {down_rate / 2**20:6.1f} MiB/s  up {up_rate / 2**20:6.1f} MiB/s  "
                f"peers {len(swarm.connections)}")

    def _show(self) -> None:
        text = self.line()
        if self.tty:
            self.stream.write("\r\x1b[K" + text)
            self.stream.flush()
        elif not self.config.quiet:
            self.log.info("{progress}", progress=text)
