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

    def test_peers_started_before_the_seeder(self, tmp_path: Path) -> None:
        """Peers that announce before the seeder exists learn of it within a few
        seconds (they ask again every 5 s while the tracker lists no seed), not
        at opentracker's 30-minute interval."""
        with URLSwarm(tmp_path, "http://127.0.0.1:{port}/announce", size=2**20) as swarm:
            tracker = Opentracker(swarm, swarm.port, [swarm.meta.info_hash])
            try:
                peers = [(n, swarm.start_peer(n, "--tracker-timeout", "20", "--seed-time", "3"))
                         for n in ("p1", "p2")]
                swarm.start_seeder("--tracker-timeout", "20")
                for name, proc in peers:
                    swarm.assert_complete(name, proc, timeout=60)
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


    def test_swarm_over_udp_ipv6(self, tmp_path: Path) -> None:
        """Over IPv6 (udp://[::1]), the tracker answers with IPv6 peers and a seeder
        and a peer on ::1 complete."""
        with URLSwarm(tmp_path, "udp://[::1]:{port}/announce", size=2**20) as swarm:
            tracker = swarm.start_tracker("--udp-port", str(swarm.port), "--udp-bind", "::1")
            seeder = swarm.start("seeder", [
                swarm.murder, "seed", "--torrent", str(swarm.torrent), "--file",
                str(swarm.payload), "--bind", "::1"])
            wait_for(lambda: "left=0" in tracker.stderr() or not seeder.alive(), 15,
                     "the seeder to announce over IPv6")
            peer = swarm.start("p1", [
                swarm.murder, "peer", "--torrent", str(swarm.torrent), "--destination",
                str(swarm.peer_dir("p1")), "--bind", "::1", "--seed-time", "0"])
            swarm.assert_complete("p1", peer, timeout=60)
            assert "UDP announce started" in tracker.stderr() and "from ::1:" in tracker.stderr()

    def test_udp_port_in_use(self, tmp_path: Path) -> None:
        """A UDP port already taken: `murder tracker` exits 1 saying which port."""
        import subprocess

        from conftest import venv_bin

        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
            taken.bind(("127.0.0.1", 0))
            port = taken.getsockname()[1]
            result = subprocess.run(
                [venv_bin("murder"), "tracker", "--port", "0", "--bind", "127.0.0.1",
                 "--udp-port", str(port), "--dfile", ""],
                capture_output=True, text=True, timeout=30, cwd=tmp_path)
        assert result.returncode == 1
        assert f"and udp:{port}: [Errno 98] Address already in use" in result.stderr
        assert "Traceback" not in result.stderr


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


TRANSMISSION = shutil.which("transmission-cli")


def _netns():
    """bench/netns.py (the emulated datacenter), or None with the reason it is unusable."""
    import sys

    bench = str(Path(__file__).resolve().parents[2] / "bench")
    if bench not in sys.path:
        sys.path.insert(0, bench)
    import netns

    return netns, netns.netns_available()


def _wait_log(proc, text: str, timeout: float, what: str) -> None:
    wait_for(lambda: text in proc.stderr() + proc.stdout() or not proc.alive(), timeout, what)
    assert text in proc.stderr() + proc.stdout(), proc.stderr()[-2000:]


@pytest.mark.integration
@pytest.mark.interop
@pytest.mark.netns
@pytest.mark.skipif(TRANSMISSION is None,
                    reason="transmission-cli is not installed (Debian transmission-cli)")
class TransmissionTests:
    """Transmission, the last standard client not yet driven in a swarm.

    Transmission never connects to loopback peers (it counts 127/8 as a
    martian address), so tracker, seeder and Transmission each run in a
    network namespace of their own (bench/netns.py, 198.18.0.0/15).
    """

    def test_transmission_downloads_from_our_seeder(self, tmp_path: Path) -> None:
        """transmission-cli downloads the payload from our seeder via our tracker
        (private torrent; DHT, LPD, PEX, uTP and port mapping off in its settings,
        so it talks to nothing but our tracker and seeder)."""
        import json

        netns, unusable = _netns()
        if unusable:
            pytest.skip(unusable)
        with netns.Topology(n_peers=1, rate_mbit=1000) as topo:
            tracker_host, seeder_host, client_host = topo.tracker, topo.seeder, topo.peers[0]
            with URLSwarm(tmp_path, f"http://{tracker_host.addr}:{{port}}/announce",
                          size=2**20, private=True) as swarm:
                tracker = swarm.start("tracker", topo.argv(tracker_host, [
                    swarm.murder, "tracker", "--listen",
                    f"tcp:{swarm.port}:interface={tracker_host.addr}", "--dfile", "",
                    "--interval", "2", "--min-interval", "1"]))
                _wait_log(tracker, "murder tracker listening", 15, "the tracker to listen")
                seeder = swarm.start("seeder", topo.argv(seeder_host, [
                    swarm.murder, "seed", "--torrent", str(swarm.torrent), "--file",
                    str(swarm.payload), "--bind", seeder_host.addr]))
                _wait_log(tracker, "left=0", 15, "the seeder to announce")
                config = tmp_path / "transmission"
                config.mkdir()
                (config / "settings.json").write_text(json.dumps({
                    "dht-enabled": False, "lpd-enabled": False, "pex-enabled": False,
                    "utp-enabled": False, "port-forwarding-enabled": False,
                    "peer-port": 51413, "peer-port-random-on-start": False,
                    "bind-address-ipv4": client_host.addr, "blocklist-enabled": False,
                    "speed-limit-up-enabled": False, "rpc-enabled": False,
                    "message-level": 2, "encryption": 0}))
                directory = swarm.peer_dir("transmission")
                done = tmp_path / "transmission.done"
                hook = tmp_path / "done.sh"
                hook.write_text(f"#!/bin/sh\ntouch {done}\n")
                hook.chmod(0o755)
                proc = swarm.start("transmission", topo.argv(client_host, [
                    TRANSMISSION, "-g", str(config), "-w", str(directory), "-f", str(hook),
                    "-M", "-et", str(swarm.torrent)]))
                wait_for(lambda: done.exists() or not proc.alive(), 60,
                         "transmission to finish the download")
                assert done.exists(), proc.stderr()[-2000:]
                assert_payload(swarm, directory / swarm.meta.name)
                assert seeder.alive(), seeder.stderr()[-2000:]
