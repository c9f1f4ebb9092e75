"""Interop with standard clients (issue 5): aria2c and libtorrent, real processes.

Our tracker coordinates every swarm.  Each standard client downloads from our
seeder, our peer downloads from each of them as the seeder, and a mixed swarm
(our seeder, two of our peers, aria2c, libtorrent) completes with the right
sha256 everywhere.  Tests skip when the client is not installed.  Torrents
made by mktorrent/libtorrent are checked in tests/test_metainfo_interop.py.

Transmission is not driven here: ``transmission-cli`` is deprecated upstream
and has no clean "exit when done" mode; ``transmission-show`` is covered by the
metainfo interop tests.
"""

from __future__ import annotations

import shutil
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import free_port
from test_faults import Proc, Swarm, sha256, wait_for

ARIA2C = shutil.which("aria2c")
try:
    import libtorrent  # noqa: F401
    HAVE_LT = True
except ImportError:  # pragma: no cover - depends on the machine
    HAVE_LT = False

needs_aria2 = pytest.mark.skipif(ARIA2C is None, reason="aria2c is not installed")
needs_lt = pytest.mark.skipif(not HAVE_LT, reason="libtorrent python bindings missing")

#: A libtorrent client: seeds (--seed, after checking the payload) or downloads,
#: announcing only to the torrent's tracker; prints "finished" when every piece
#: is verified, exits 0 then (leecher) or runs until SIGTERM (seeder).
LT_CLIENT = textwrap.dedent('''
    import sys, time, libtorrent as lt
    torrent, save, port, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    ses = lt.session({
        "listen_interfaces": f"127.0.0.1:{port}", "enable_dht": False, "enable_lsd": False,
        "enable_upnp": False, "enable_natpmp": False, "enable_incoming_utp": False,
        "enable_outgoing_utp": False, "allow_multiple_connections_per_ip": True,
        "alert_mask": lt.alert.category_t.error_notification})
    h = ses.add_torrent({"ti": lt.torrent_info(torrent), "save_path": save})
    deadline = time.time() + 90
    while time.time() < deadline:
        s = h.status()
        if s.errc.value():
            print("error", s.errc.message(), flush=True); sys.exit(2)
        if s.is_seeding:
            print("finished", flush=True)
            if mode == "leech":
                time.sleep(float(sys.argv[5]) if len(sys.argv) > 5 else 0)
                sys.exit(0)
            while True:
                time.sleep(1)
        time.sleep(0.1)
    print("timeout", s.progress, flush=True); sys.exit(3)
''')


def aria2c_argv(torrent: Path, directory: Path, *, seed: bool = False,
                linger: float = 0) -> list[str]:
    """aria2c with DHT/LPD/PEX off, listening on a free loopback-picked port."""
    port = free_port()
    argv = [ARIA2C, "--dir", str(directory), "--enable-dht=false", "--enable-dht6=false",
            "--bt-enable-lpd=false", "--enable-peer-exchange=false", "--disable-ipv6=true",
            f"--listen-port={port}", "--summary-interval=0", "--console-log-level=warn",
            "--file-allocation=none", "--bt-tracker-connect-timeout=5",
            "--bt-tracker-interval=2", "--allow-overwrite=true", "--auto-save-interval=0"]
    if seed:
        argv += ["--check-integrity=true", "--bt-seed-unverified=false",
                 "--seed-ratio=0.0"]
    else:
        argv += [f"--seed-time={linger / 60:.3f}"]
    return argv + [str(torrent)]


def lt_argv(tmp: Path, torrent: Path, directory: Path, mode: str, linger: float = 0
            ) -> list[str]:
    script = tmp / "lt_client.py"
    if not script.exists():
        script.write_text(LT_CLIENT)
    return [sys.executable, str(script), str(torrent), str(directory), str(free_port()), mode,
            str(linger)]


def assert_payload(swarm: Swarm, path: Path) -> None:
    assert path.exists(), f"{path} missing"
    assert sha256(path) == swarm.digest, f"{path}: wrong sha256"


@pytest.mark.integration
@pytest.mark.interop
class TheirClientFromOurSeederTests:
    """Standard clients download from our seeder via our tracker."""

    @needs_aria2
    def test_aria2c_downloads_from_our_seeder(self, tmp_path: Path) -> None:
        """aria2c fetches the payload from our seeder and exits 0."""
        with Swarm(tmp_path) as swarm:
            swarm.start_tracker()
            swarm.start_seeder()
            dest = swarm.peer_dir("aria2")
            aria = swarm.start("aria2", aria2c_argv(swarm.torrent, dest))
            code = aria.wait(60)
            assert code == 0, aria.stdout()[-2000:] + aria.stderr()[-2000:]
            assert_payload(swarm, dest / swarm.meta.name)

    @needs_lt
    def test_libtorrent_downloads_from_our_seeder(self, tmp_path: Path) -> None:
        """libtorrent fetches and verifies the payload from our seeder."""
        with Swarm(tmp_path) as swarm:
            swarm.start_tracker()
            swarm.start_seeder()
            dest = swarm.peer_dir("lt")
            lt = swarm.start("lt", lt_argv(tmp_path, swarm.torrent, dest, "leech"))
            code = lt.wait(90)
            assert code == 0, lt.stdout() + lt.stderr()[-2000:]
            assert_payload(swarm, dest / swarm.meta.name)


@pytest.mark.integration
@pytest.mark.interop
class OurPeerFromTheirSeederTests:
    """Our peer downloads from a standard client seeding via our tracker."""

    @needs_aria2
    def test_our_peer_from_aria2c_seeder(self, tmp_path: Path) -> None:
        """aria2c checks and seeds the payload; our peer downloads it from aria2c."""
        with Swarm(tmp_path) as swarm:
            swarm.start_tracker()
            seeder = swarm.start("aria2-seed", aria2c_argv(swarm.torrent, swarm.payload.parent,
                                                           seed=True))
            wait_for(lambda: swarm.scrape()[0] >= 1 or not seeder.alive(), 30,
                     "aria2c to announce as a seed")
            assert seeder.alive(), seeder.stdout() + seeder.stderr()
            peer = swarm.start_peer("ours")
            swarm.assert_complete("ours", peer, timeout=60)

    @needs_lt
    def test_our_peer_from_libtorrent_seeder(self, tmp_path: Path) -> None:
        """libtorrent checks and seeds the payload; our peer downloads it."""
        with Swarm(tmp_path) as swarm:
            swarm.start_tracker()
            seeder = swarm.start("lt-seed", lt_argv(tmp_path, swarm.torrent,
                                                    swarm.payload.parent, "seed"))
            wait_for(lambda: swarm.scrape()[0] >= 1 or not seeder.alive(), 30,
                     "libtorrent to announce as a seed")
            assert seeder.alive(), seeder.stdout() + seeder.stderr()
            peer = swarm.start_peer("ours")
            swarm.assert_complete("ours", peer, timeout=60)


@pytest.mark.integration
@pytest.mark.interop
@needs_aria2
@needs_lt
class MixedSwarmTests:
    """Our seeder and peers in one swarm with aria2c and libtorrent."""

    def test_mixed_swarm_completes(self, tmp_path: Path) -> None:
        """1 our seeder, 2 our peers, 1 aria2c, 1 libtorrent: all finish with
        the right sha256 (everyone lingers a little so they trade pieces)."""
        with Swarm(tmp_path, size=8 * 2**20) as swarm:
            swarm.start_tracker()
            swarm.start_seeder("--max-upload-rate", "4M")
            aria_dir, lt_dir = swarm.peer_dir("aria2"), swarm.peer_dir("lt")
            procs: list[tuple[str, Proc]] = [
                ("aria2", swarm.start("aria2", aria2c_argv(swarm.torrent, aria_dir,
                                                           linger=5))),
                ("lt", swarm.start("lt", lt_argv(tmp_path, swarm.torrent, lt_dir, "leech",
                                                 linger=5))),
            ]
            ours = [(n, swarm.start_peer(n, "--seed-time", "5")) for n in ("o1", "o2")]
            for name, proc in procs:
                code = proc.wait(90)
                assert code == 0, f"{name}: {proc.stdout()[-2000:]}{proc.stderr()[-2000:]}"
            for name, proc in ours:
                swarm.assert_complete(name, proc, timeout=60)
            assert_payload(swarm, aria_dir / swarm.meta.name)
            assert_payload(swarm, lt_dir / swarm.meta.name)
