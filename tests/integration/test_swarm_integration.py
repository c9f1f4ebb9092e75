"""Real processes on 127.0.0.1: tracker + seeder + peers, exit statuses, resume, twistd.

Every process is started by this module, on ports picked here, and killed by
PID in a finalizer; every wait is bounded.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import bencodepy
import pytest
from harness import wait_for as wait_until
from conftest import free_port, venv_bin, sha256_file as sha256

from murder import metainfo

pytestmark = pytest.mark.integration

PIECE = 2**18


def random_file(path: Path, size: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        remaining = size
        while remaining:
            n = min(remaining, 2**20)
            f.write(os.urandom(n))
            remaining -= n
    return path


def make_torrent(payload: Path, announce: str, out: Path) -> metainfo.Metainfo:
    raw = bencodepy.encode(metainfo.create(str(payload), announce, piece_length=PIECE))
    metainfo.write_atomic(str(out), raw)
    return metainfo.parse(raw)


class Processes:
    """Popen bookkeeping: stderr to files, bounded waits, kill by PID at the end."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.procs: list[tuple[subprocess.Popen, Path]] = []

    def start(self, name: str, *args: str, **kw) -> subprocess.Popen:
        log = self.logdir / f"{name}.log"
        with open(log, "wb") as err:
            proc = subprocess.Popen(list(args), stdout=err, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, **kw)
        proc.log_path = log  # type: ignore[attr-defined]
        self.procs.append((proc, log))
        return proc

    @staticmethod
    def output(proc: subprocess.Popen) -> str:
        return proc.log_path.read_text(errors="replace")  # type: ignore[attr-defined]

    def wait(self, proc: subprocess.Popen, timeout: float) -> int:
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"process {proc.args!r} still running after {timeout}s:\n"
                                 + self.output(proc)[-3000:]) from None

    def kill_all(self) -> None:
        for proc, _ in self.procs:
            if proc.poll() is None:
                try:
                    os.kill(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass


def tracker_knows_seeder(port: int, info_hash: bytes) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/status.json", timeout=1) as r:
            doc = json.load(r)
    except OSError:
        return False
    return any(t["info_hash"] == info_hash.hex() and t["complete"] >= 1
               for t in doc["torrents"])


class Swarm:
    """A tracker and a seeder of a single-file payload, shared by this module's tests."""

    def __init__(self, root: Path, procs: Processes) -> None:
        self.root = root
        self.procs = procs
        self.murder = venv_bin("murder")
        self.port = free_port()
        self.announce = f"http://127.0.0.1:{self.port}/announce"
        self.tracker = procs.start("tracker", self.murder, "tracker", "--port", str(self.port),
                                   "--bind", "127.0.0.1", "--interval", "2",
                                   "--dfile", str(root / "tracker.dfile"))
        self.payload = random_file(root / "seed" / "release.bin", 6 * 2**20 + 12345)
        self.torrent = root / "release.torrent"
        self.meta = make_torrent(self.payload, self.announce, self.torrent)
        self.digest = sha256(self.payload)
        self.seed(self.torrent, self.payload, self.meta, "seeder")

    def seed(self, torrent: Path, payload: Path, meta, name: str) -> subprocess.Popen:
        proc = self.procs.start(name, self.murder, "seed", "--torrent", str(torrent),
                                "--file", str(payload), "--ip", "127.0.0.1",
                                "--bind", "127.0.0.1")
        wait_until(lambda: proc.poll() is not None or
                   tracker_knows_seeder(self.port, meta.info_hash), 20,
                   f"{name} to announce")
        assert proc.poll() is None, self.procs.output(proc)
        return proc

    def peer_args(self, *extra: str, torrent: Path | None = None) -> list[str]:
        return [self.murder, "peer", "--torrent", str(torrent or self.torrent),
                "--ip", "127.0.0.1", "--bind", "127.0.0.1", "--seed-time", "1",
                "--tracker-timeout", "10", *extra]


@pytest.fixture(scope="module")
def swarm(tmp_path_factory):
    root = tmp_path_factory.mktemp("swarm")
    procs = Processes(root)
    try:
        yield Swarm(root, procs)
    finally:
        procs.kill_all()


@pytest.fixture
def procs(tmp_path):
    p = Processes(tmp_path)
    try:
        yield p
    finally:
        p.kill_all()


class DeployTests:
    """Whole deploys with real processes."""

    def test_eight_peers(self, swarm, procs, tmp_path):
        """Eight peers all exit 0 with the payload's exact sha256 and no .part left."""
        peers = []
        for i in range(8):
            dest = tmp_path / f"host{i}"
            dest.mkdir()
            peers.append((procs.start(f"peer{i}", *swarm.peer_args("--destination", str(dest))),
                          dest))
        for proc, dest in peers:
            assert procs.wait(proc, 40) == 0, procs.output(proc)
            assert sha256(dest / "release.bin") == swarm.digest
            assert os.listdir(dest) == ["release.bin"]

    def test_hash_threads(self, swarm, procs, tmp_path):
        """--hash-threads 2 (pieces hashed and written in worker threads): two
        peers exit 0 with the exact payload, no .part left."""
        peers = []
        for i in range(2):
            dest = tmp_path / f"host{i}"
            dest.mkdir()
            peers.append((procs.start(f"peer{i}", *swarm.peer_args(
                "--destination", str(dest), "--hash-threads", "2")), dest))
        for proc, dest in peers:
            assert procs.wait(proc, 40) == 0, procs.output(proc)
            assert sha256(dest / "release.bin") == swarm.digest
            assert os.listdir(dest) == ["release.bin"]

    def test_download_cap(self, swarm, procs, tmp_path):
        """--max-download-rate holds: 6 MiB at 4 MiB/s takes over a second of download."""
        dest = tmp_path / "dest"
        dest.mkdir()
        proc = procs.start("peer", *swarm.peer_args("--destination", str(dest),
                                                    "--max-download-rate", "4M"))
        assert procs.wait(proc, 40) == 0, procs.output(proc)
        took = float(re.search(r"verified \(\d+ bytes in ([0-9.]+)s\)",
                               procs.output(proc)).group(1))
        # 6 MiB less the quarter-second burst, at 4 MiB/s.
        assert took >= (swarm.meta.total_length - 2**20) / (4 * 2**20) - 0.1, took
        assert sha256(dest / "release.bin") == swarm.digest

    def test_existing_complete_file(self, swarm, procs, tmp_path):
        """A complete verified file at the target: exit 0 at once, file untouched."""
        dest = tmp_path / "dest"
        dest.mkdir()
        target = dest / "release.bin"
        shutil.copyfile(swarm.payload, target)
        os.utime(target, ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))
        before = target.stat()
        start = time.monotonic()
        proc = procs.start("peer", *swarm.peer_args("--destination", str(dest)))
        assert procs.wait(proc, 20) == 0, procs.output(proc)
        assert time.monotonic() - start < 15
        after = target.stat()
        assert (after.st_ino, after.st_mtime_ns, after.st_size) == \
            (before.st_ino, before.st_mtime_ns, before.st_size)
        assert os.listdir(dest) == ["release.bin"]

    def test_resume_from_part(self, swarm, procs, tmp_path):
        """Half a payload in <target>.part is verified and kept; the rest is downloaded."""
        dest = tmp_path / "dest"
        dest.mkdir()
        half = swarm.payload.read_bytes()[:swarm.meta.total_length // 2]
        (dest / "release.bin.part").write_bytes(half)
        proc = procs.start("peer", *swarm.peer_args("--destination", str(dest)))
        assert procs.wait(proc, 30) == 0, procs.output(proc)
        out = procs.output(proc)
        expected = len(half) // PIECE
        assert f"resuming: {expected} of {swarm.meta.num_pieces} pieces already verified" in out
        assert sha256(dest / "release.bin") == swarm.digest
        assert os.listdir(dest) == ["release.bin"]

    def test_status_fd(self, swarm, procs, tmp_path):
        """--status-fd N receives 'complete <path>' and is closed at exit."""
        dest = tmp_path / "dest"
        dest.mkdir()
        read_end, write_end = os.pipe()
        try:
            proc = procs.start("peer", *swarm.peer_args("--destination", str(dest),
                                                        "--status-fd", str(write_end)),
                               pass_fds=(write_end,))
            os.close(write_end)
            write_end = -1
            assert procs.wait(proc, 30) == 0, procs.output(proc)
            with os.fdopen(read_end, "rb") as r:
                read_end = -1
                status = r.read()
            assert status == f"complete {dest / 'release.bin'}\n".encode()
        finally:
            for fd in (read_end, write_end):
                if fd >= 0:
                    os.close(fd)

    def test_saveas(self, swarm, procs, tmp_path):
        """--saveas PATH puts the payload exactly at PATH."""
        target = tmp_path / "any-name.tgz"
        proc = procs.start("peer", *swarm.peer_args("--saveas", str(target)))
        assert procs.wait(proc, 30) == 0, procs.output(proc)
        assert sha256(target) == swarm.digest

    def test_multi_file(self, swarm, procs, tmp_path):
        """A directory torrent (nested files, an empty one) deploys intact."""
        src = tmp_path / "src" / "app"
        files = {"bin/app": 700_000, "lib/a.so": 1, "lib/empty": 0, "README": 3000,
                 "data/big.bin": 1_300_000}
        for rel, size in files.items():
            random_file(src / rel, size)
        torrent = tmp_path / "app.torrent"
        meta = make_torrent(src, swarm.announce, torrent)
        swarm.seed(torrent, src, meta, "dir-seeder")
        dests = []
        for i in range(2):
            dest = tmp_path / f"dest{i}"
            dest.mkdir()
            dests.append((procs.start(f"peer{i}", *swarm.peer_args(
                "--destination", str(dest), torrent=torrent)), dest))
        for proc, dest in dests:
            assert procs.wait(proc, 30) == 0, procs.output(proc)
            for rel in files:
                assert sha256(dest / "app" / rel) == sha256(src / rel), rel
            assert os.listdir(dest) == ["app"]


class FailureTests:
    """Failing peers exit non-zero, say why in one line, and leave nothing behind."""

    def test_tracker_down(self, procs, tmp_path):
        """No tracker: non-zero within about --tracker-timeout, one-line reason, no files."""
        payload = random_file(tmp_path / "p.bin", 300_000)
        dead = f"http://127.0.0.1:{free_port()}/announce"
        torrent = tmp_path / "p.torrent"
        make_torrent(payload, dead, torrent)
        dest = tmp_path / "dest"
        dest.mkdir()
        start = time.monotonic()
        proc = procs.start("peer", venv_bin("murder"), "peer", "--torrent", str(torrent),
                           "--destination", str(dest), "--ip", "127.0.0.1",
                           "--tracker-timeout", "2", "--quiet")
        code = procs.wait(proc, 20)
        elapsed = time.monotonic() - start
        out = procs.output(proc)
        assert code != 0, out
        assert elapsed < 12, elapsed
        lines = [line for line in out.splitlines() if line.strip()]
        # The real time waited: 2s, or a tenth more when the last attempt ended late.
        assert any(re.search(rf"no tracker answered within 2(\.\d)?s \({re.escape(dead)}\)", line)
                   for line in lines), out
        assert "Traceback" not in out
        assert os.listdir(dest) == []

    def test_tracker_down_status_fd(self, procs, tmp_path):
        """--status-fd gets 'failed <reason>' before the failing exit."""
        payload = random_file(tmp_path / "p.bin", 1000)
        torrent = tmp_path / "p.torrent"
        make_torrent(payload, f"http://127.0.0.1:{free_port()}/announce", torrent)
        dest = tmp_path / "dest"
        dest.mkdir()
        read_end, write_end = os.pipe()
        try:
            proc = procs.start("peer", venv_bin("murder"), "peer", "--torrent", str(torrent),
                               "--destination", str(dest), "--tracker-timeout", "1",
                               "--quiet", "--status-fd", str(write_end),
                               pass_fds=(write_end,))
            os.close(write_end)
            write_end = -1
            assert procs.wait(proc, 20) != 0
            with os.fdopen(read_end, "rb") as r:
                read_end = -1
                status = r.read().decode()
            assert re.match(r"failed no tracker answered within 1(\.\d)?s", status), status
            assert status.endswith("\n") and status.count("\n") == 1
        finally:
            for fd in (read_end, write_end):
                if fd >= 0:
                    os.close(fd)


    def test_sigterm_keeps_part_for_resume(self, swarm, procs, tmp_path):
        """SIGTERM mid-download: exit non-zero, no target, the .part stays for a resume."""
        dest = tmp_path / "dest"
        dest.mkdir()
        proc = procs.start("peer", *swarm.peer_args("--destination", str(dest),
                                                    "--max-download-rate", "512K",
                                                    "--progress-interval", "0.2"))
        part = dest / "release.bin.part"
        # Mid-download: a progress line counts at least one verified piece.
        wait_until(lambda: proc.poll() is not None or (part.exists() and re.search(
            r"\((?!0/)\d+/\d+ pieces\)", procs.output(proc))), 15, "a verified piece")
        assert proc.poll() is None, procs.output(proc)
        proc.send_signal(signal.SIGTERM)
        code = procs.wait(proc, 10)
        assert code != 0, procs.output(proc)
        assert os.listdir(dest) == ["release.bin.part"]
        resumed = procs.start("resumed", *swarm.peer_args("--destination", str(dest)))
        assert procs.wait(resumed, 30) == 0, procs.output(resumed)
        assert "resuming: " in procs.output(resumed)
        assert sha256(dest / "release.bin") == swarm.digest

    def test_complete_at_start_tracker_down(self, procs, tmp_path):
        """A payload already complete at the target exits 0 even if no tracker answers."""
        dest = tmp_path / "dest"
        payload = random_file(dest / "p.bin", 1000)
        torrent = tmp_path / "p.torrent"
        make_torrent(payload, f"http://127.0.0.1:{free_port()}/announce", torrent)
        proc = procs.start("peer", venv_bin("murder"), "peer", "--torrent", str(torrent),
                           "--destination", str(dest), "--tracker-timeout", "1",
                           "--seed-time", "3", "--quiet")
        assert procs.wait(proc, 20) == 0, procs.output(proc)
        assert payload.read_bytes() and os.listdir(dest) == ["p.bin"]


class TwistdTests:
    """twistd -n murder-peer ends the process with the run's exit status."""

    def test_success_exit_zero(self, swarm, procs, tmp_path):
        """A verified download under twistd exits 0."""
        dest = tmp_path / "dest"
        dest.mkdir()
        proc = procs.start("twistd-peer", venv_bin("twistd"), "-n", "--pidfile=", "murder-peer",
                           *swarm.peer_args("--destination", str(dest))[2:], cwd=tmp_path)
        assert procs.wait(proc, 40) == 0, procs.output(proc)
        assert sha256(dest / "release.bin") == swarm.digest

    def test_tracker_down_exit_non_zero(self, procs, tmp_path):
        """With no tracker, twistd murder-peer exits non-zero and leaves no file."""
        payload = random_file(tmp_path / "p.bin", 1000)
        torrent = tmp_path / "p.torrent"
        make_torrent(payload, f"http://127.0.0.1:{free_port()}/announce", torrent)
        dest = tmp_path / "dest"
        dest.mkdir()
        proc = procs.start("twistd-peer", venv_bin("twistd"), "-n", "--pidfile=", "murder-peer",
                           "--torrent", str(torrent), "--destination", str(dest),
                           "--tracker-timeout", "1", cwd=tmp_path)
        code = procs.wait(proc, 30)
        assert code != 0, procs.output(proc)
        assert re.search(r"no tracker answered within 1(\.\d)?s", procs.output(proc))
        assert os.listdir(dest) == []
