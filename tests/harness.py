"""Waiting on real processes: every integration test's bounded waits, in one place.

A test never sleeps a fixed time hoping something happened; it waits for a
*signal* that it did, with a deadline: a predicate over a log file, a
listening port, the tracker's view of the swarm.
Import with ``from harness import wait_for, …`` (pytest puts ``tests/`` on
``sys.path``).
"""

from __future__ import annotations

import json
import socket
import time
import urllib.request
from typing import Any, Callable

#: How often a wait looks again.  Short: a wait ends soon after its signal.
POLL = 0.05


def wait_for(predicate: Callable[[], Any], timeout: float, what: str,
             interval: float = POLL) -> Any:
    """Poll ``predicate`` until truthy and return its value; fail the test
    (AssertionError naming ``what``) after ``timeout`` seconds.  An
    ``OSError`` from the predicate (a server not up yet) counts as not yet."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = predicate()
            if last:
                return last
        except OSError as e:
            last = e
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} "
                                 f"(last: {last!r})")
        time.sleep(interval)


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """Does something accept TCP connections on ``host:port`` now?"""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def wait_for_port(host: str, port: int, timeout: float = 15.0) -> None:
    """Return once ``host:port`` accepts TCP connections."""
    wait_for(lambda: port_open(port, host), timeout, f"a listener on {host}:{port}")


def tracker_status(port: int, timeout: float = 1.0) -> dict[str, Any]:
    """The tracker's ``/status.json`` on 127.0.0.1:``port`` ({} if it does not answer)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/status.json",
                                    timeout=timeout) as r:
            return dict(json.load(r))
    except OSError:
        return {}


def tracker_counts(port: int, info_hash: bytes) -> tuple[int, int]:
    """``(complete, incomplete)`` the tracker on ``port`` counts for ``info_hash``."""
    for torrent in tracker_status(port).get("torrents", []):
        if torrent.get("info_hash") == info_hash.hex():
            return int(torrent.get("complete", 0)), int(torrent.get("incomplete", 0))
    return 0, 0
