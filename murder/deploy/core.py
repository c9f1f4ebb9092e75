"""The pure part of a deploy: per-host records, what a session said, why it failed.

No I/O and no reactor: :class:`HostRecord` is fed the lines and exit status
of one host's session and keeps its state; :func:`classify_exit` turns an
ended session into a one-line reason; :class:`Aggregate` sums the fleet for
the progress line.  Times come from the caller's clock.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, asdict
from typing import Any, Iterable

# Final outcomes of a host.
VERIFIED = "verified"
FAILED = "failed"

# Failure kinds (stable strings: they are in the JSON report).
UNREACHABLE = "unreachable"
HOST_KEY = "host-key-refused"
AUTH = "ssh-auth-failed"
SSH_ERROR = "ssh-error"
NOT_INSTALLED = "murder-not-installed"
TOO_OLD = "murder-too-old"
DISK_FULL = "disk-full"
PEER_FAILED = "peer-failed"
THEN_FAILED = "then-failed"
TIMED_OUT = "timed-out"
INTERRUPTED = "interrupted"

#: ssh's own exit status for "an error occurred" (connection, auth, host key).
SSH_EXIT_ERROR = 255

_PROGRESS = re.compile(r"\((\d+)/(\d+) pieces\)")
_TOTALS = re.compile(r"totals: uploaded (\d+) bytes .*?downloaded (\d+)")

# ssh's messages (OpenSSH 7–9) that say the connection never got anywhere.
_UNREACHABLE_HINTS = ("Connection refused", "Connection timed out", "No route to host",
                      "Network is unreachable", "Could not resolve hostname",
                      "Name or service not known", "Connection closed by",
                      "Connection reset by", "timed out during banner exchange",
                      "kex_exchange_identification", "Temporary failure in name resolution",
                      "Operation timed out")
_HOST_KEY_HINTS = ("Host key verification failed", "REMOTE HOST IDENTIFICATION HAS CHANGED",
                   "host key is known", "Host key for")
_TOO_OLD_HINTS = ("not recognized", "unknown command", "is larger than", "No such option",
                  "stdin ended before")


@dataclass
class HostRecord:
    """One host's state and result; fed by its session, read by the display/report."""

    host: str
    state: str = "waiting"  # waiting, connecting, running, then, verified, failed
    kind: str | None = None  # failure kind when failed
    reason: str | None = None
    started: float | None = None  # first connection attempt
    completed: float | None = None  # payload verified (and --then done)
    attempts: int = 0
    pieces: int = 0
    total_pieces: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    path: str | None = None
    peer_said: bool = False  # any line from the remote peer at all
    last_words: list[str] = field(default_factory=list)

    @property
    def final(self) -> bool:
        return self.state in (VERIFIED, FAILED)

    @property
    def payload_verified(self) -> bool:
        """The peer reported ``complete`` (``--then`` may still run or fail)."""
        return self.path is not None

    @property
    def fraction(self) -> float:
        if self.payload_verified:
            return 1.0
        return self.pieces / self.total_pieces if self.total_pieces else 0.0

    def fail(self, kind: str, reason: str, now: float | None = None) -> None:
        if self.final:
            return
        self.state, self.kind, self.reason = FAILED, kind, reason
        if now is not None and self.completed is None:
            self.completed = now

    def succeed(self, now: float) -> None:
        if self.final:
            return
        self.state = VERIFIED
        self.completed = now

    def status_line(self, line: str) -> str | None:
        """The peer's ``--status-fd`` verdict; returns "complete"/"failed"/None."""
        self.peer_said = True
        if line.startswith("complete"):
            self.path = line[len("complete"):].strip() or "?"
            self.pieces = self.total_pieces
            return "complete"
        if line.startswith("failed"):
            if self.final:  # e.g. interrupted here first: keep that reason
                return "failed"
            text = line[len("failed"):].strip() or "unknown error"
            kind = DISK_FULL if _disk_full(text) else \
                TOO_OLD if any(h in text for h in _TOO_OLD_HINTS) else PEER_FAILED
            reason = {DISK_FULL: "disk full: ", TOO_OLD: "murder too old or refused "
                      "the options: "}.get(kind, "peer failed: ") + text
            self.kind, self.reason = kind, reason  # recorded; fail() once the session ends
            return "failed"
        return None

    def log_line(self, line: str) -> None:
        """One line of the remote peer's stderr (progress, totals, errors)."""
        m = _PROGRESS.search(line)
        if m:
            self.peer_said = True
            self.pieces, self.total_pieces = int(m.group(1)), int(m.group(2))
            return
        m = _TOTALS.search(line)
        if m:
            self.peer_said = True
            self.bytes_up, self.bytes_down = int(m.group(1)), int(m.group(2))
            return
        if "murder peer:" in line:
            self.peer_said = True
        text = line.strip()
        if text:
            self.last_words = (self.last_words + [text])[-5:]

    def report(self) -> dict[str, Any]:
        """The host's entry in the JSON report."""
        d = asdict(self)
        d.pop("last_words")
        d.pop("peer_said")
        d["result"] = self.state if self.final else "unfinished"
        return d


def _disk_full(text: str) -> bool:
    return "no space left" in text.lower() or "disk quota exceeded" in text.lower()


def _last(lines: Iterable[str], hints: tuple[str, ...] = ()) -> str:
    lines = [ln for ln in lines if ln.strip()]
    for line in reversed(lines):
        if any(h in line for h in hints):
            return line.strip()
    return lines[-1].strip() if lines else ""


def classify_exit(record: HostRecord, exit_code: int | None, signal: int | None,
                  remote_murder: str = "murder") -> tuple[str, str, bool]:
    """Why a session that ended without a verified payload failed.

    Returns ``(kind, one-line reason, retryable)``; only connection failures
    before the remote command ran are retryable.
    """
    words = record.last_words
    text = "\n".join(words)
    if record.kind is not None and record.reason is not None:
        return record.kind, record.reason, False  # the peer's own verdict
    if signal is not None:
        return PEER_FAILED, f"ssh client killed by signal {signal}", False
    if exit_code == SSH_EXIT_ERROR and not record.peer_said:
        if any(h in text for h in _HOST_KEY_HINTS):
            return HOST_KEY, "host key refused: " + _last(words, _HOST_KEY_HINTS), False
        if "Permission denied" in text or "Too many authentication failures" in text:
            return AUTH, "ssh authentication failed: " + _last(words, ("Permission denied",)), \
                False
        if any(h in text for h in _UNREACHABLE_HINTS):
            return UNREACHABLE, "unreachable: " + _last(words, _UNREACHABLE_HINTS), True
        return SSH_ERROR, "ssh failed (status 255): " + (_last(words) or "no message"), True
    if exit_code == 127 and not record.peer_said:
        return NOT_INSTALLED, f"murder not installed ({remote_murder}: command not found)", \
            False
    if exit_code == 126 and not record.peer_said:
        return NOT_INSTALLED, f"murder not executable ({_last(words) or remote_murder})", False
    if exit_code == 2 and any(h in text for h in _TOO_OLD_HINTS):
        return TOO_OLD, "murder too old (no `peer --torrent - --stop-on-eof`): " + \
            _last(words, _TOO_OLD_HINTS), False
    if _disk_full(text):
        return DISK_FULL, "disk full: " + _last(words, ("No space", "no space")), False
    if exit_code == SSH_EXIT_ERROR:
        return PEER_FAILED, "peer died without a verdict (session lost or process killed)", \
            False
    detail = _last(words)
    return PEER_FAILED, f"peer exited with status {exit_code} without a verdict" + \
        (f": {detail}" if detail else ""), False


def then_failure(exit_code: int | None, signal: int | None, words: list[str]) -> str:
    """One line for a failed ``--then`` command."""
    how = f"signal {signal}" if signal is not None else f"status {exit_code}"
    detail = _last(words)
    if exit_code == SSH_EXIT_ERROR and detail:
        return f"then-command: ssh failed (status 255): {detail}"
    return f"then-command failed with {how}" + (f": {detail}" if detail else "")


@dataclass
class Aggregate:
    """Fleet totals for the progress line: counts, rate, ETA, slowest hosts.

    The rate is taken over the last ``window`` seconds: peers report progress
    once a second, so a shorter span would swing between bursts and zero."""

    payload_bytes: int
    window: float = 3.0
    rate: float = 0.0  # bytes/s
    _samples: list[tuple[float, float]] = field(default_factory=list)

    def update(self, records: list[HostRecord], now: float) -> dict[str, Any]:
        done = sum(1 for r in records if r.state == VERIFIED)
        failed = sum(1 for r in records if r.state == FAILED)
        active = [r for r in records if not r.final]
        moved = sum(r.fraction for r in records if r.state != FAILED) * self.payload_bytes
        self._samples.append((now, moved))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self.window:
            self._samples.pop(0)
        then, before = self._samples[0]
        if now > then:
            self.rate = max(0.0, moved - before) / (now - then)
        left = sum(1.0 - r.fraction for r in active) * self.payload_bytes
        eta = left / self.rate if self.rate > 0 else None
        slowest = sorted((r for r in active if r.state in ("running", "connecting")),
                         key=lambda r: (r.fraction, r.host))[:3]
        return {"done": done, "failed": failed, "active": len(active), "total": len(records),
                "rate": self.rate, "eta": eta,
                "slowest": [(r.host, r.fraction, r.state) for r in slowest]}


def summary_line(records: list[HostRecord], elapsed: float, payload_bytes: int) -> str:
    """The one-line end summary."""
    ok = sum(1 for r in records if r.state == VERIFIED)
    bad = len(records) - ok
    size = payload_bytes / 2**20
    if bad == 0:
        return f"deployed {size:.1f} MiB to all {ok} hosts in {elapsed:.1f}s"
    return f"FAILED: {bad} of {len(records)} hosts ({ok} verified) after {elapsed:.1f}s; " \
        f"{size:.1f} MiB payload"


def failure_table(records: list[HostRecord]) -> list[str]:
    """Lines of the end table: one per failed host, its reason on one line."""
    bad = [r for r in records if r.state != VERIFIED]
    if not bad:
        return []
    width = max(len(r.host) for r in bad)
    lines = [f"{'host':{width}}  {'kind':20}  reason"]
    for r in bad:
        lines.append(f"{r.host:{width}}  {(r.kind or 'unfinished'):20}  "
                     f"{r.reason or 'did not finish'}")
    return lines
