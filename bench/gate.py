"""Launch gate and per-process accounting for the swarm benchmark.

The gate: every receiver is started early as
``ip netns exec NS /bin/sh -c 'read x; [ -e GATE ] || exit 97; exec "$@" </dev/null' GATE CLIENT...``
with its stdin on the read end of one pipe.  All receivers block in ``read``.
`Gate.open()` creates the gate file, takes the start time, and closes the
pipe's only write end: every parked shell sees EOF at the same instant and
execs its client.  So the launch overhead (fork, ``ip netns exec``, mount
namespace setup) is not timed but each client's own start-up is.  If the
harness dies before opening the gate, the shells see EOF without the file and
exit 97 instead of starting an untimed client.

Accounting: ``ip netns exec`` and ``sh`` both *exec*, so the PID we spawn is
the client's PID.  A reaper thread per process calls ``os.wait4(pid)``, which
returns the rusage of the process and all of its waited-for descendants:
user+sys CPU seconds and peak RSS (``ru_maxrss``; it carries over exec, but the
parked ``ip``/``sh`` are a few MiB, below any client).  CPU spent before the
gate (the parked shell, or a seeder's start-up hashing) is read from
``/proc/<pid>/stat`` at gate time and reported separately.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Mapping, Sequence

_GATE_SCRIPT = 'read x; [ -e "$0" ] || exit 97; exec "$@" </dev/null'
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_cpu_seconds(pid: int) -> float | None:
    """utime+stime (all threads) of a live process from /proc/<pid>/stat."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # fields[0] is state (field 3); utime/stime are fields 14/15.
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


class Gate:
    """One start line for many processes (see module docstring)."""

    def __init__(self, directory: str) -> None:
        self.path = os.path.join(directory, "gate.open")
        self._r, self._w = os.pipe()
        self.opened_at: float | None = None

    def wrap(self, argv: Sequence[str]) -> list[str]:
        """``argv`` prefixed with the parking shell."""
        return ["/bin/sh", "-c", _GATE_SCRIPT, self.path, *argv]

    @property
    def stdin(self) -> int:
        """The fd to give gated processes as stdin."""
        return self._r

    def open(self) -> float:
        """Create the gate file, release every parked process, return the start time."""
        with open(self.path, "w"):
            pass
        self.opened_at = time.monotonic()
        os.close(self._w)
        self._w = -1
        return self.opened_at

    def close(self) -> None:
        """Release the pipe (parked processes exit 97 if the gate was never opened)."""
        for fd in (self._r, self._w):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._r = self._w = -1


def is_parked(pid: int, gate: Gate) -> bool:
    """True once ``pid`` is the parking shell blocked on the gate pipe."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().split(b"\0")
        with open(f"/proc/{pid}/wchan") as f:
            wchan = f.read().strip()
    except OSError:
        return False
    return cmd[:2] == [b"/bin/sh", b"-c"] and gate.path.encode() in cmd and \
        (wchan in ("pipe_read", "anon_pipe_read") or wchan in ("", "0"))


@dataclass
class Proc:
    """A process we started (by PID), reaped by its own thread with wait4."""

    name: str
    role: str
    argv: list[str]
    popen: subprocess.Popen
    started: float
    ended: float | None = None
    status: int | None = None
    cpu_s: float | None = None
    maxrss_kib: int | None = None
    cpu_at_gate: float | None = None
    _done: threading.Event = field(default_factory=threading.Event)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @classmethod
    def spawn(cls, name: str, role: str, argv: Sequence[str], *, log_path: str,
              env: Mapping[str, str] | None = None, stdin: int | None = None,
              cwd: str | None = None) -> "Proc":
        """Start ``argv`` in its own session, output to ``log_path``; reap with wait4."""
        with open(log_path, "ab") as log:
            popen = subprocess.Popen(
                list(argv), stdin=stdin if stdin is not None else subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, env=dict(env) if env else None,
                cwd=cwd, start_new_session=True)
        proc = cls(name, role, list(argv), popen, time.monotonic())
        threading.Thread(target=proc._reap, name=f"reap-{name}", daemon=True).start()
        return proc

    def _reap(self) -> None:
        _, status, ru = os.wait4(self.pid, 0)
        self.ended = time.monotonic()
        self.status = os.waitstatus_to_exitcode(status)
        self.popen.returncode = self.status  # Popen must not wait on a reaped PID
        self.cpu_s = ru.ru_utime + ru.ru_stime
        self.maxrss_kib = ru.ru_maxrss
        self._done.set()

    @property
    def running(self) -> bool:
        return not self._done.is_set()

    def snapshot_gate(self) -> None:
        """Record CPU used so far (before the gate / the timed window)."""
        self.cpu_at_gate = proc_cpu_seconds(self.pid) or 0.0

    @property
    def cpu_after_gate(self) -> float | None:
        """CPU seconds from the gate to the end of the process."""
        if self.cpu_s is None:
            return None
        return max(0.0, self.cpu_s - (self.cpu_at_gate or 0.0))

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    def signal(self, sig: int) -> None:
        """Send ``sig`` to this PID only (never by name)."""
        if self.running:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def stop(self, grace: float = 3.0) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; waits for the reaper."""
        self.signal(signal.SIGTERM)
        if not self.wait(grace):
            self.signal(signal.SIGKILL)
            self.wait(5.0)


def stop_all(procs: Sequence[Proc], grace: float = 3.0) -> None:
    """Stop many processes concurrently: SIGTERM all, wait ``grace``, SIGKILL the rest."""
    for p in procs:
        p.signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for p in procs:
        p.wait(max(0.0, deadline - time.monotonic()))
    for p in procs:
        if p.running:
            p.signal(signal.SIGKILL)
    for p in procs:
        p.wait(5.0)
