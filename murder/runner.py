"""One foreground runner for every long-running command (tracker, seeder, peer).

``murder tracker|seed|peer`` and the legacy shim's scripts run a service on
the global reactor in the foreground.  What they share lives here, once:
the log format (a prefix, timestamps unless on a terminal, Twisted's own
chatter filtered out, a progress line cleared before each log line), SIGHUP
as a clean stop, and running the reactor until a stop.  The exit status is
the caller's (it knows what success means).
"""

from __future__ import annotations

import signal
import sys
import time
from typing import Any, Callable, TextIO

from twisted.logger import (FilteringLogObserver, ILogObserver, LogLevel,
                            LogLevelFilterPredicate, formatEvent, globalLogBeginner)
from zope.interface import provider


def clear_line(stream: Any) -> None:
    """Erase a progress line before a log line is printed over it."""
    if getattr(stream, "isatty", lambda: False)():
        stream.write("\r\x1b[K")


def log_observer(prefix: str, stream: TextIO) -> ILogObserver:
    """An observer writing ``[HH:MM:SS.mmm ]prefix: text`` lines to ``stream``.

    Log files get timestamps, a terminal does not; Twisted's own factory
    start/stop chatter (below warn, outside ``murder.*``) is noise for a
    deploy log.
    """
    tty = stream.isatty()

    @provider(ILogObserver)
    def observer(event: dict) -> None:
        if event["log_level"] < LogLevel.warn and \
                not event.get("log_namespace", "").startswith("murder"):
            return
        text = formatEvent(event)
        if event.get("log_failure") is not None and event["log_level"] >= LogLevel.error:
            text += "\n" + event["log_failure"].getTraceback()
        clear_line(stream)
        stamp = "" if tty else time.strftime("%H:%M:%S", time.localtime(event["log_time"])) + \
            f".{int(event['log_time'] * 1000) % 1000:03d} "
        stream.write(f"{stamp}{prefix}: {text}\n")
        stream.flush()

    return observer


def begin_logging(prefix: str, quiet: bool = False, stream: TextIO | None = None) -> None:
    """Send the global log to ``stream`` (stderr), warnings only when ``quiet``."""
    level = LogLevel.warn if quiet else LogLevel.info
    predicate = LogLevelFilterPredicate(defaultLogLevel=level)
    observer = log_observer(prefix, stream or sys.stderr)
    globalLogBeginner.beginLoggingTo([FilteringLogObserver(observer, [predicate])],
                                     redirectStandardIO=False)


def stop_on_sighup(reactor: Any) -> None:
    """SIGHUP (an ssh session or screen going away) is a clean stop, like SIGTERM.

    Unless the caller chose to ignore it: the legacy shim's detached seeding
    child must survive its terminal.  The recipes stop the tracker and the
    seeder by killing their screen, which hangs up its window; a SIGHUP that
    killed us outright would skip the tracker's final dfile save and the
    seeder's ``stopped`` announce.
    """
    if signal.getsignal(signal.SIGHUP) is signal.SIG_IGN:
        return

    def stop() -> None:
        from twisted.internet.error import ReactorNotRunning

        try:
            reactor.stop()
        except ReactorNotRunning:  # a second hangup while already stopping
            pass

    # Queued calls run once the reactor runs, so an early hangup still stops it.
    signal.signal(signal.SIGHUP, lambda *_: reactor.callFromThread(stop))


def stop_on_stdin_eof(reactor: Any) -> None:
    """Stop the reactor (a clean stop, as SIGTERM) once stdin reaches EOF.

    A blocking read in a daemon thread, not a reactor reader: stdin may be a
    pipe shared with nothing else, but making it non-blocking could affect a
    descriptor the caller also holds.  Bytes read are ignored."""
    import os
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


def run(reactor: Any, start: Callable[[], Any] | None, stop: Callable[[], Any]) -> None:
    """Run the reactor: ``start`` once it runs, ``stop`` before it shuts down."""
    stop_on_sighup(reactor)
    if start is not None:
        reactor.callWhenRunning(start)
    reactor.addSystemEventTrigger("before", "shutdown", stop)
    reactor.run()


__all__ = ["begin_logging", "clear_line", "log_observer", "run", "stop_on_sighup",
           "stop_on_stdin_eof"]
