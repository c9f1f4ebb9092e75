"""The UDP load generator of bench/tracker_announce.py against a real tracker process.

The benchmark's figures are only as good as its generator: this checks, on
127.0.0.1, that ``bench/udp_announce_load.c`` connects, announces, matches
every reply to its request with many requests in flight over a few sockets,
and reports its own CPU, and that the tracker's /metrics count what it read
(wakeups and datagrams).  Correctness only, no timing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import stop_process
from test_tracker_fleet import free_udp_port
from twins import bench_module

tracker_announce = bench_module("tracker_announce")

needs_cc = pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None,
                              reason="no C compiler (Debian gcc) for the UDP load generator")


@pytest.mark.integration
@needs_cc
class UDPLoadGeneratorTests:
    """Every request of the C generator is answered and counted, on both sides."""

    def test_many_in_flight_all_answered_and_counted(self, tmp_path: Path) -> None:
        """300 requests in flight over 4 sockets for 1 s: announces answered with
        peers, no timeout, no error reply, no reply matched to the wrong request;
        the tracker's /metrics saw at least as many datagrams as were answered."""
        load = tracker_announce.build_udp_load(tmp_path)
        hashes = tmp_path / "hashes"
        hashes.write_text("".join(os.urandom(20).hex() + "\n" for _ in range(5)))
        port = free_udp_port()
        murder = str(Path(sys.executable).parent / "murder")
        log = open(tmp_path / "tracker.log", "wb")
        proc = subprocess.Popen([murder, "tracker", "--port", str(port), "--bind",
                                 "127.0.0.1", "--dfile", "", "--udp-port", str(port)],
                                stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
        try:
            tracker_announce.wait_ready(port, proc)
            before = tracker_announce.udp_io([port])
            env = {**os.environ, "UDP_LOAD_SOCKETS": "4"}
            out = subprocess.run([str(load), "127.0.0.1", "1", "300", str(hashes), str(port)],
                                 capture_output=True, text=True, timeout=30, check=True,
                                 env=env).stdout
            after = tracker_announce.udp_io([port])
        finally:
            stop_process(proc)
            log.close()
        stats = json.loads(out.split("UDPJSON ", 1)[1])
        assert stats["requests"] > 300 and stats["connects"] >= 300
        assert (stats["timeouts"], stats["errors"], stats["stale"]) == (0, 0, 0)
        assert (stats["inflight"], stats["sockets"]) == (300, 4)
        assert stats["cpu_s"] > 0 and stats["peers_per_reply"] > 0
        assert 0 < stats["p50_us"] <= stats["p99_us"] <= stats["max_us"]
        reads, datagrams = (b - a for a, b in zip(before, after))
        assert reads >= 1 and stats["sent"] - 300 <= datagrams <= stats["sent"]
