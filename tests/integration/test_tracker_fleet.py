"""Trackers at fleet scale (issue 15), as real processes on 127.0.0.1.

Our seeder and peers complete a swarm through Debian's ``opentracker`` (HTTP
and UDP), and through our tracker over UDP (BEP 15); aria2c and libtorrent
announce over UDP to our tracker.  Tests skip when a program is missing.
Every process is killed by PID when the test ends; every wait is bounded.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from pathlib import Path

import pytest

from conftest import free_port
from murder import metainfo
from test_faults import Swarm, _bencode, port_open, wait_for
from test_interop import aria2c_argv, assert_payload, lt_argv, needs_aria2, needs_lt

OPENTRACKER = shutil.which("opentracker")
needs_opentracker = pytest.mark.skipif(OPENTRACKER is None,
                                       reason="opentracker is not installed (Debian opentracker)")


def free_udp_port() -> int:
    """A UDP port free right now on 127.0.0.1 (also free for TCP, so one number serves both)."""
    for _ in range(50):
        port = free_port()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free UDP port")


class URLSwarm(Swarm):
    """A :class:`Swarm` whose torrent announces to ``url`` (a format string taking
    ``port``), so it can point at opentracker or at our tracker's UDP port."""

    def __init__(self, tmp: Path, url: str, private: bool = False, **kw) -> None:
        self.port = free_udp_port()
        self._url = url.format(port=self.port)
        super().__init__(tmp, **kw)
        self.tracker_port = self.port  # HTTP (scrape, status) on the same number
        if private:
            raw = metainfo.create(str(self.payload), self._url, piece_length=self.meta.piece_length,
                                  private=True)
            metainfo.write_atomic(str(self.torrent), _bencode(raw))
            self.meta = metainfo.load(str(self.torrent))

    @property
    def announce_url(self) -> str:
        return self._url


class Opentracker:
    """``opentracker`` on 127.0.0.1, TCP and UDP on ``port``, tracking ``info_hashes``.

    Debian's build only tracks whitelisted torrents, and drops to user nobody
    inside its chroot: the whitelist lives in a world-readable directory.
    """

    def __init__(self, swarm: Swarm, port: int, info_hashes: list[bytes]) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="opentracker-"))
        os.chmod(self.dir, 0o755)
        whitelist = self.dir / "whitelist"
        whitelist.write_text("".join(ih.hex() + "\n" for ih in info_hashes))
        os.chmod(whitelist, 0o644)
        self.proc = swarm.start("opentracker", [
            OPENTRACKER, "-i", "127.0.0.1", "-p", str(port), "-P", str(port),
            "-d", str(self.dir), "-w", "whitelist"])
        wait_for(lambda: port_open(port) or not self.proc.alive(), 15, "opentracker to listen")
        assert self.proc.alive(), self.proc.stderr()

    def cleanup(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def _seed_and_two_peers(swarm: Swarm) -> None:
    """A seeder, once the tracker counts it, then two peers; both peers must end
    with the exact payload.  (Peers started first would learn of the seeder only
    at their next announce: opentracker asks for one every 30 minutes.)"""
    seeder = swarm.start_seeder("--tracker-timeout", "20")
    peers = [(n, swarm.start_peer(n, "--tracker-timeout", "20", "--seed-time", "3"))
             for n in ("p1", "p2")]
    for name, proc in peers:
        swarm.assert_complete(name, proc, timeout=60)
    assert seeder.alive(), seeder.stderr()[-3000:]


@pytest.mark.integration
@pytest.mark.interop
@needs_opentracker
class OpentrackerSwarmTests:
    """Our seeder and peers use opentracker, the most deployed tracker."""

    @pytest.mark.parametrize("scheme", ["http", "udp"])
    def test_swarm_through_opentracker(self, tmp_path: Path, scheme: str) -> None:
        """murder seed + two murder peers complete through opentracker over HTTP
        (compact=1, which opentracker requires) and over UDP (BEP 15)."""
        with URLSwarm(tmp_path, f"{scheme}://127.0.0.1:{{port}}/announce",
                      size=2 * 2**20) as swarm:
            tracker = Opentracker(swarm, swarm.port, [swarm.meta.info_hash])
            try:
                _seed_and_two_peers(swarm)
            finally:
                tracker.cleanup()

    def test_refusal_says_what_the_tracker_answered(self, tmp_path: Path) -> None:
        """A torrent opentracker does not track: the peer fails after its
        --tracker-timeout saying the tracker refused (status and failure reason),
        not that no tracker answered."""
        with URLSwarm(tmp_path, "http://127.0.0.1:{port}/announce", size=2**16) as swarm:
            tracker = Opentracker(swarm, swarm.port, [b"\x01" * 20])
            try:
                proc = swarm.start_peer("p1", "--tracker-timeout", "2", "-q")
                code = proc.wait(30)
                err = proc.stderr()
                assert code != 0, err
                assert "tracker refused the announce for 2" in err, err
                assert "not authorized" in err, err
                assert "no tracker answered" not in err, err
                assert "Traceback" not in err, err
            finally:
                tracker.cleanup()




def start_udp_tracker(swarm: Swarm, *extra: str):
    """Our tracker, HTTP and UDP on ``swarm.port``; ready when the TCP port listens
    (the UDP port is bound first, in the same start)."""
    return swarm.start_tracker("--udp-port", str(swarm.tracker_port), "--udp-bind", "127.0.0.1",
                               *extra)


@pytest.mark.integration
class OurUDPTrackerTests:
    """Our tracker's BEP 15 port with our own seeder and peers."""

    def test_swarm_over_udp(self, tmp_path: Path) -> None:
        """A torrent announcing only udp://: seeder and two peers complete, and the
        tracker lists all three (the announces really went over UDP)."""
        with URLSwarm(tmp_path, "udp://127.0.0.1:{port}/announce", size=2 * 2**20) as swarm:
            tracker = start_udp_tracker(swarm)
            _seed_and_two_peers(swarm)
            assert "UDP announce started" in tracker.stderr() + tracker.stdout()

    def test_udp_first_falls_back_to_http(self, tmp_path: Path) -> None:
        """BEP 12: a dead udp:// tracker listed first, our HTTP tracker second: the peers
        fall back to HTTP after the UDP share of --tracker-timeout and complete."""
        with Swarm(tmp_path, size=2**20) as swarm:
            dead = free_udp_port()
            raw = swarm.meta.raw
            raw[b"announce-list"] = [[f"udp://127.0.0.1:{dead}/announce".encode()],
                                     [swarm.announce_url.encode()]]
            metainfo.write_atomic(str(swarm.torrent), _bencode(raw))
            swarm.start_tracker()
            seeder = swarm.start("seeder", [
                swarm.murder, "seed", "--torrent", str(swarm.torrent), "--file",
                str(swarm.payload), "--bind", "127.0.0.1", "--tracker-timeout", "6"])
            peer = swarm.start_peer("p1", "--tracker-timeout", "6")
            swarm.assert_complete("p1", peer, timeout=60)
            assert seeder.alive(), seeder.stderr()[-2000:]
            assert "no UDP connect reply within 3s" in peer.stderr(), peer.stderr()


@pytest.mark.integration
@pytest.mark.interop
class StandardClientsOverUDPTests:
    """aria2c and libtorrent announce over UDP to our tracker and get peers: each
    downloads the payload from our seeder, which it can only have learnt from a
    UDP announce reply (DHT, LPD and PEX are off)."""

    @needs_aria2
    def test_aria2c_over_udp(self, tmp_path: Path) -> None:
        """aria2c downloads from our seeder via our UDP tracker."""
        with URLSwarm(tmp_path, "udp://127.0.0.1:{port}/announce", size=2**20,
                      private=True) as swarm:
            tracker = start_udp_tracker(swarm)
            swarm.start_seeder()
            directory = swarm.peer_dir("aria2")
            # aria2 speaks UDP trackers through its DHT socket, so DHT must be on; the
            # torrent is private, so DHT is never used for it, and with an empty routing
            # table in a fresh file nothing is sent anywhere but to our tracker.
            argv = aria2c_argv(swarm.torrent, directory)
            argv[1:1] = ["--enable-dht=true", f"--dht-listen-port={free_udp_port()}",
                         f"--dht-file-path={tmp_path / 'dht.dat'}"]
            argv.remove("--enable-dht=false")
            aria = swarm.start("aria2", argv)
            code = aria.wait(60)
            assert code == 0, aria.stdout()[-2000:] + aria.stderr()[-2000:]
            assert_payload(swarm, directory / swarm.meta.name)
            assert "UDP announce started" in tracker.stderr() + tracker.stdout()

    @needs_lt
    def test_libtorrent_over_udp(self, tmp_path: Path) -> None:
        """libtorrent downloads from our seeder via our UDP tracker."""
        with URLSwarm(tmp_path, "udp://127.0.0.1:{port}/announce", size=2**20) as swarm:
            tracker = start_udp_tracker(swarm)
            swarm.start_seeder()
            directory = swarm.peer_dir("lt")
            lt = swarm.start("lt", lt_argv(tmp_path, swarm.torrent, directory, "leech"))
            code = lt.wait(60)
            assert code == 0, lt.stdout()[-2000:] + lt.stderr()[-2000:]
            assert_payload(swarm, directory / swarm.meta.name)
            log = tracker.stderr() + tracker.stdout()
            assert log.count("UDP announce started") >= 2, log[-3000:]
