"""The shared foreground runner (murder/runner.py): log lines and SIGHUP."""

from __future__ import annotations

import io
import signal

from twisted.logger import LogLevel

from murder import runner


def event(text: str, level: LogLevel = LogLevel.info, namespace: str = "murder.x") -> dict:
    return {"log_format": text, "log_level": level, "log_namespace": namespace,
            "log_time": 1_700_000_000.25}


class LogObserverTests:
    """One format for tracker, seeder and peer logs."""

    def test_prefix_and_timestamp_off_a_terminal(self):
        """A log file gets 'HH:MM:SS.mmm prefix: text' lines."""
        out = io.StringIO()
        runner.log_observer("murder tracker", out)(event("listening"))
        line = out.getvalue()
        assert line.endswith(" murder tracker: listening\n")
        assert line[2] == ":" and line[8] == "." and line[12] == " "

    def test_twisted_chatter_below_warn_is_dropped(self):
        """Twisted's own info lines are noise in a deploy log; its warnings are not."""
        out = io.StringIO()
        observe = runner.log_observer("murder peer", out)
        observe(event("Starting factory", namespace="twisted.internet"))
        assert out.getvalue() == ""
        observe(event("disk trouble", LogLevel.warn, namespace="twisted.internet"))
        assert "murder peer: disk trouble" in out.getvalue()


class FakeReactor:
    def __init__(self) -> None:
        self.calls: list = []

    def callFromThread(self, f, *args) -> None:  # noqa: N802
        self.calls.append(f)

    def stop(self) -> None:
        self.calls.append("stopped")


class SighupTests:
    """SIGHUP is a clean stop unless the caller chose to ignore it."""

    def test_hangup_stops_the_reactor(self):
        """After stop_on_sighup, SIGHUP queues a reactor stop."""
        previous = signal.getsignal(signal.SIGHUP)
        try:
            signal.signal(signal.SIGHUP, signal.SIG_DFL)
            reactor = FakeReactor()
            runner.stop_on_sighup(reactor)
            signal.getsignal(signal.SIGHUP)(signal.SIGHUP, None)
            (stop,) = reactor.calls
            stop()
            assert reactor.calls[-1] == "stopped"
        finally:
            signal.signal(signal.SIGHUP, previous)

    def test_ignored_hangup_stays_ignored(self):
        """A detached seeder that ignores SIGHUP keeps ignoring it."""
        previous = signal.getsignal(signal.SIGHUP)
        try:
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
            runner.stop_on_sighup(FakeReactor())
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
        finally:
            signal.signal(signal.SIGHUP, previous)
