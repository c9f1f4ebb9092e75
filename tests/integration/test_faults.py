"""Fault tests (issue 5): real tracker, seeder and peer processes on 127.0.0.1.

Each test builds its own swarm on free ports from the installed ``murder``
command, injects one fault (SIGKILL, a hostile peer, a dead tracker, a full
disk…) and checks that every honest peer still ends with the exact payload,
or fails with a clear message and leaves nothing at its target.  Every
process is killed by PID in ``finally``; every wait is bounded.

The small process harness (:class:`Swarm`) is also used by
``test_interop.py``.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from harness import port_open, wait_for  # noqa: F401  (test_tracker_fleet imports them here)
from conftest import free_port, sha256_file as sha256, stop_process, venv_bin
from murder import metainfo

HOSTILE = str(Path(__file__).resolve().parents[1] / "hostile_peer.py")
PIECE = 2**16


# ------------------------------------------------------------------ harness


def verified_set(path: Path, meta: metainfo.Metainfo) -> set[int]:
    """Indices of the pieces of ``path`` (a .part or a payload) matching their hash."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return set()
    return {i for i in range(meta.num_pieces)
            if hashlib.sha1(data[i * meta.piece_length:i * meta.piece_length
                                 + meta.piece_size(i)]).digest() == meta.pieces[i]}


class Proc:
    """A started process with its output in files; killed by PID."""

    def __init__(self, name: str, argv: list[str], logdir: Path, **kw) -> None:
        self.name = name
        self.argv = argv
        self.out = logdir / f"{name}.out"
        self.err = logdir / f"{name}.err"
        with open(self.out, "ab") as out, open(self.err, "ab") as err:
            self.popen = subprocess.Popen(argv, stdout=out, stderr=err,
                                          stdin=subprocess.DEVNULL, **kw)
        self.pid = self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def wait(self, timeout: float) -> int:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.name} still running after {timeout}s; "
                                 f"stderr:\n{self.stderr()[-3000:]}") from None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        stop_process(self.popen, sig)

    def stderr(self) -> str:
        return self.err.read_text(errors="replace") if self.err.exists() else ""

    def stdout(self) -> str:
        return self.out.read_text(errors="replace") if self.out.exists() else ""


class Swarm:
    """Tracker + seeder + peers of one torrent, as real processes.

    Use as a context manager: leaving it kills every process it started.
    """

    def __init__(self, tmp: Path, size: int = 4 * 2**20, piece_length: int = PIECE,
                 payload: bytes | None = None, name: str = "payload.bin") -> None:
        self.tmp = tmp
        self.logs = tmp / "logs"
        self.logs.mkdir(exist_ok=True)
        self.procs: list[Proc] = []
        self.tracker_port = free_port()
        self.murder = venv_bin("murder")
        src = tmp / "src"
        src.mkdir(exist_ok=True)
        self.payload = src / name
        self.payload.write_bytes(payload if payload is not None else
                                 random.Random(size).randbytes(size))
        self.digest = sha256(self.payload)
        self.torrent = tmp / "payload.torrent"
        raw = metainfo.create(str(self.payload), self.announce_url, piece_length=piece_length)
        metainfo.write_atomic(str(self.torrent), _bencode(raw))
        self.meta = metainfo.load(str(self.torrent))
        self.tracker: Proc | None = None
        self._n = 0

    @property
    def announce_url(self) -> str:
        return f"http://127.0.0.1:{self.tracker_port}/announce"

    def __enter__(self) -> "Swarm":
        return self

    def __exit__(self, *exc) -> None:
        self.kill_all()

    def kill_all(self) -> None:
        for p in self.procs:
            p.kill()

    def start(self, name: str, argv: list[str], **kw) -> Proc:
        proc = Proc(name, argv, self.logs, **kw)
        self.procs.append(proc)
        return proc

    # -- roles
    def start_tracker(self, *extra: str, dfile: Path | None = None) -> Proc:
        dfile = dfile or self.tmp / "tracker.dfile"
        self._n += 1
        self.tracker = self.start(f"tracker{self._n}", [
            self.murder, "tracker", "--listen", f"tcp:{self.tracker_port}:interface=127.0.0.1",
            "--dfile", str(dfile), "--interval", "2", "--min-interval", "1", *extra])
        wait_for(lambda: port_open(self.tracker_port) or not self.tracker.alive(), 15,
                 "the tracker to listen")
        assert self.tracker.alive(), self.tracker.stderr()
        return self.tracker

    def start_seeder(self, *extra: str, wait: bool = True) -> Proc:
        seeder = self.start("seeder", [
            self.murder, "seed", "--torrent", str(self.torrent), "--file", str(self.payload),
            "--ip", "127.0.0.1", "--bind", "127.0.0.1", *extra])
        if wait:
            wait_for(lambda: self.scrape()[0] >= 1 or not seeder.alive(), 15,
                     "the seeder to announce")
            assert seeder.alive(), seeder.stderr()
        return seeder

    def peer_dir(self, name: str) -> Path:
        d = self.tmp / name
        d.mkdir(exist_ok=True)
        return d

    def target(self, name: str) -> Path:
        return self.peer_dir(name) / self.meta.name

    def part(self, name: str) -> Path:
        return self.target(name).with_name(self.meta.name + ".part")

    def start_peer(self, name: str, *extra: str, torrent: Path | None = None,
                   log: str | None = None, **popen) -> Proc:
        """Start ``murder peer`` into ``tmp/<name>/`` (log files named ``log`` or ``name``)."""
        dest = self.peer_dir(name)
        return self.start(log or name, [
            self.murder, "peer", "--torrent", str(torrent or self.torrent),
            "--destination", str(dest), "--ip", "127.0.0.1", "--bind", "127.0.0.1",
            "--seed-time", "0", *extra], **popen)

    def start_hostile(self, mode: str) -> Proc:
        stats = self.logs / f"hostile-{mode}.json"
        proc = self.start(f"hostile-{mode}", [sys.executable, HOSTILE, "--torrent",
                                               str(self.torrent), "--mode", mode,
                                               "--stats", str(stats)])
        proc.stats_path = stats  # type: ignore[attr-defined]
        wait_for(lambda: self.hostile_stats(proc).get("announces", 0) >= 1
                 or not proc.alive(), 15, "the hostile peer to announce")
        assert proc.alive(), proc.stderr()
        return proc

    @staticmethod
    def hostile_stats(proc: Proc) -> dict:
        try:
            return json.loads(Path(proc.stats_path).read_text())  # type: ignore[attr-defined]
        except (OSError, ValueError):
            return {}

    # -- observation
    def scrape(self) -> tuple[int, int]:
        """``(complete, incomplete)`` for our torrent, ``(-1, -1)`` if unreachable."""
        from urllib.parse import quote_from_bytes

        import bencodepy

        url = (f"http://127.0.0.1:{self.tracker_port}/scrape?info_hash="
               + quote_from_bytes(self.meta.info_hash, safe=""))
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                files = bencodepy.decode(r.read()).get(b"files", {})
        except Exception:
            return -1, -1
        entry = files.get(self.meta.info_hash, {})
        return entry.get(b"complete", 0), entry.get(b"incomplete", 0)

    def pieces(self, name: str) -> set[int]:
        """Verified pieces this peer has on disk (in .part, or done)."""
        if self.target(name).exists():
            return verified_set(self.target(name), self.meta)
        return verified_set(self.part(name), self.meta)

    def progress(self, name: str) -> int:
        return len(self.pieces(name))

    def status(self) -> dict:
        """The tracker's /status.json, or {} if it does not answer."""
        try:
            with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.tracker_port}/status.json", timeout=2) as r:
                return json.loads(r.read())
        except Exception:
            return {}

    def tracked_peers(self) -> int:
        return self.status().get("totals", {}).get("peers", 0)

    def assert_complete(self, name: str, proc: Proc, timeout: float = 60) -> None:
        code = proc.wait(timeout)
        assert code == 0, f"{name} exited {code}:\n{proc.stderr()[-3000:]}"
        assert sha256(self.target(name)) == self.digest, f"{name}: wrong sha256"
        assert not self.part(name).exists(), f"{name}: .part left behind"


def _listening_port(proc: Proc) -> int | None:
    """The port a murder seed/peer process reports listening on (from its log)."""
    for line in proc.stderr().splitlines():
        if " on port " in line:
            return int(line.rsplit(" on port ", 1)[1].split()[0])
    return None


def _bencode(obj) -> bytes:
    import bencodepy

    return bencodepy.encode(obj)


# -------------------------------------------------------------------- tests


@pytest.mark.integration
class ResumeTests:
    """A peer killed half way resumes from its verified pieces."""

    def test_sigkill_half_way_then_resume(self, tmp_path: Path) -> None:
        """SIGKILL at ~50 %, restart: the log reports resumed pieces, at least
        the pieces verified before the kill are kept (only in-flight ones are
        fetched again), and the result has the right sha256."""
        with Swarm(tmp_path, size=4 * 2**20) as swarm:
            swarm.start_tracker()
            swarm.start_seeder()
            total = swarm.meta.num_pieces
            peer = swarm.start_peer("p1", "--max-download-rate", "512K")
            wait_for(lambda: swarm.progress("p1") >= total // 2 or not peer.alive(), 30,
                     "half the pieces")
            peer.kill(signal.SIGKILL)
            before = swarm.progress("p1")
            assert total // 2 <= before < total, f"killed at {before}/{total}"
            assert not swarm.target("p1").exists(), "target written before completion"
            again = swarm.start_peer("p1", log="p1-resumed")
            swarm.assert_complete("p1", again, timeout=60)
            log = again.stderr()
            marker = "resuming: "
            assert marker in log, log
            resumed = int(log.split(marker, 1)[1].split(" of ", 1)[0])
            assert f"of {total} pieces already verified" in log
            # Every piece verified before the kill was kept: nothing but the
            # pieces in flight at the kill is downloaded again.
            assert before <= resumed < total, (before, resumed, total)


@pytest.mark.integration
class HostilePeerTests:
    """Honest peers finish correctly with a hostile peer in the swarm."""

    def _swarm_with(self, tmp_path: Path, mode: str, *peer_args: str
                    ) -> tuple[Swarm, Proc, list[str]]:
        swarm = Swarm(tmp_path, size=2 * 2**20)
        swarm.start_tracker()
        # A slow seeder makes the hostile peer, which answers at once, the
        # tempting source: every honest peer does ask it for blocks.
        swarm.start_seeder("--max-upload-rate", "2M")
        hostile = swarm.start_hostile(mode)
        names = ["h1", "h2", "h3"]
        procs = [swarm.start_peer(n, *peer_args) for n in names]
        try:
            for n, p in zip(names, procs):
                swarm.assert_complete(n, p, timeout=60)
        except BaseException:
            swarm.kill_all()
            raise
        return swarm, hostile, [p.stderr() for p in procs]

    def test_wrong_blocks_are_detected_and_source_banned(self, tmp_path: Path) -> None:
        """A peer serving random bytes: hash failures are logged, it is banned,
        the pieces are fetched again from honest peers, sha256 is right."""
        swarm, hostile, logs = self._swarm_with(tmp_path, "wrong")
        with swarm:
            stats = swarm.hostile_stats(hostile)
            assert stats["blocks_sent"] > 0, stats
            assert any("failed its hash" in log for log in logs), logs
            assert any("banning" in log and ("failing the hash" in log or "bad block" in log)
                       for log in logs), logs

    def test_lone_peer_never_bans_its_honest_seeder(self, tmp_path: Path) -> None:
        """One peer, the seeder and a wrong-block peer, large pieces so blocks
        of both land in the same piece: only the liar is banned and the peer
        finishes (it used to ban the seeder after 3 mixed failures and stall)."""
        with Swarm(tmp_path, size=8 * 2**20, piece_length=2**18) as swarm:
            swarm.start_tracker()
            seeder = swarm.start_seeder("--max-upload-rate", "2M")
            hostile = swarm.start_hostile("wrong")
            peer = swarm.start_peer("p1")
            swarm.assert_complete("p1", peer, timeout=40)
            assert swarm.hostile_stats(hostile)["blocks_sent"] > 0
            log = peer.stderr()
            assert "failed its hash" in log, log
            seeder_port = wait_for(lambda: _listening_port(seeder), 5, "seeder port")
            assert f"'127.0.0.1', {seeder_port})" not in "".join(
                line for line in log.splitlines() if "banning" in line), log

    def test_garbage_messages_get_the_sender_banned(self, tmp_path: Path) -> None:
        """A peer sending protocol garbage is dropped and banned; nobody crashes."""
        swarm, hostile, logs = self._swarm_with(tmp_path, "garbage")
        with swarm:
            stats = swarm.hostile_stats(hostile)
            assert stats["garbage_sent"] > 0, stats
            assert any("banning" in log for log in logs), logs
            assert not any("Traceback" in log for log in logs), logs

    def test_silent_peer_requests_go_elsewhere(self, tmp_path: Path) -> None:
        """A peer that accepts requests and never answers: its requests time
        out and are re-issued to others; every peer finishes."""
        swarm, hostile, logs = self._swarm_with(tmp_path, "silent", "--snub-timeout", "3")
        with swarm:
            stats = swarm.hostile_stats(hostile)
            # It never sent a block, so every block it was asked for came
            # from someone else (snub timeout or endgame duplicates).
            assert stats["requests"] > 0, stats
            assert stats["blocks_sent"] == 0, stats


@pytest.mark.integration
class TrackerFaultTests:
    """The swarm does not depend on the tracker staying up."""

    def test_tracker_killed_and_restarted_from_dfile(self, tmp_path: Path) -> None:
        """SIGKILL the tracker mid-swarm and restart it on its dfile: it knows
        the seeder again at once (the seeder does not re-announce for 300 s),
        a peer started while it was down gets its peers from it, and all
        peers finish with the right sha256."""
        with Swarm(tmp_path) as swarm:
            interval = ("--interval", "300", "--min-interval", "300", "--save-interval", "0.5")
            swarm.start_tracker(*interval)
            swarm.start_seeder()
            slow = ("--max-download-rate", "1M")
            p1, p2 = swarm.start_peer("p1", *slow), swarm.start_peer("p2", *slow)
            wait_for(lambda: swarm.tracked_peers() >= 3, 15, "3 peers at the tracker")
            saved = time.time()
            dfile = tmp_path / "tracker.dfile"
            wait_for(lambda: dfile.exists() and dfile.stat().st_mtime > saved + 0.1, 10,
                     "a dfile save after all peers announced")
            wait_for(lambda: swarm.progress("p1") > 0, 15, "p1 to start downloading")
            swarm.tracker.kill(signal.SIGKILL)
            assert not port_open(swarm.tracker_port)
            p3 = swarm.start_peer("p3", *slow)
            # p3 found no tracker: the restarted one must learn of it by its retries.
            wait_for(lambda: not p3.alive() or "failed" in p3.stderr(), 15,
                     "p3's first announce to fail")
            swarm.start_tracker(*interval)
            complete, _ = swarm.scrape()
            assert complete >= 1, "the restarted tracker forgot the seeder (dfile not loaded)"
            for name, proc in (("p1", p1), ("p2", p2), ("p3", p3)):
                swarm.assert_complete(name, proc, timeout=60)

    def test_tracker_gone_for_good(self, tmp_path: Path) -> None:
        """Once every peer has its peer list the tracker dies for good: the
        peers keep their connections, finish and exit 0."""
        with Swarm(tmp_path) as swarm:
            swarm.start_tracker()
            swarm.start_seeder()
            names = ["p1", "p2", "p3"]
            procs = [swarm.start_peer(n, "--max-download-rate", "1M") for n in names]
            wait_for(lambda: swarm.tracked_peers() >= 4, 15, "4 peers at the tracker")
            wait_for(lambda: all(swarm.progress(n) > 0 for n in names), 15,
                     "every peer downloading")
            swarm.tracker.kill(signal.SIGKILL)
            assert all(swarm.progress(n) < swarm.meta.num_pieces for n in names)
            for n, p in zip(names, procs):
                swarm.assert_complete(n, p, timeout=60)

    def test_no_tracker_ever_fails_clearly(self, tmp_path: Path) -> None:
        """A peer whose tracker never answers exits non-zero within about
        --tracker-timeout, says why on stderr and on --status-fd, and leaves
        neither a target nor a .part file."""
        with Swarm(tmp_path) as swarm:  # no tracker started on its port
            r, w = os.pipe()
            try:
                start = time.monotonic()
                peer = swarm.start_peer("p1", "--tracker-timeout", "2", "--status-fd", str(w),
                                        pass_fds=(w,))
                os.close(w)
                w = -1
                code = peer.wait(20)
                elapsed = time.monotonic() - start
                status = os.read(r, 4096).decode()
            finally:
                os.close(r)
                if w >= 0:
                    os.close(w)
            assert code != 0
            assert 2 <= elapsed < 20, elapsed
            err = peer.stderr()
            assert "tracker" in err.lower() and str(swarm.tracker_port) in err, err
            assert status.startswith("failed ") and "tracker" in status.lower(), status
            assert not swarm.target("p1").exists()
            assert not swarm.part("p1").exists()


@pytest.mark.integration
class SeederFaultTests:
    """The swarm outlives its seeder once the seeder has sent one full copy."""

    def test_seeder_killed_after_one_copy(self, tmp_path: Path) -> None:
        """SIGKILL the seeder as soon as the peers together hold every piece
        (one full copy has left it) while none is complete: all finish."""
        with Swarm(tmp_path) as swarm:
            swarm.start_tracker()
            # Upload caps (download caps leak with several sources: see
            # docs/reliability.md) make the peers copy from each other more
            # slowly than the seeder spreads new pieces.
            seeder = swarm.start_seeder("--max-upload-rate", "1M")
            names = ["p1", "p2", "p3"]
            # Finished peers linger (datacenter mode) so the others can use them.
            procs = [swarm.start_peer(n, "--max-upload-rate", "256K",
                                      "--seed-until-swarm-done", "--max-linger", "30")
                     for n in names]
            total = swarm.meta.num_pieces

            def one_copy() -> bool:
                union: set[int] = set()
                for n in names:
                    union |= swarm.pieces(n)
                return len(union) == total

            wait_for(one_copy, 30, "one full copy spread over the peers", interval=0.02)
            seeder.kill(signal.SIGKILL)
            counts = [swarm.progress(n) for n in names]
            # Some peer still needs pieces that only the others can give it.
            assert min(counts) < total, counts
            for n, p in zip(names, procs):
                swarm.assert_complete(n, p, timeout=60)


@pytest.mark.integration
class DiskFaultTests:
    """Storage failures end the peer cleanly; the target is all or nothing."""

    @pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
    def test_disk_full(self, tmp_path: Path) -> None:
        """A 4 MiB payload into a 2 MiB tmpfs: non-zero exit, 'no space left on
        device' on stderr, no file at the target and no .part."""
        with Swarm(tmp_path) as swarm:
            swarm.start_tracker()
            swarm.start_seeder()
            dest = swarm.peer_dir("full")
            mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs",
                                      str(dest)], capture_output=True)
            if mounted.returncode:
                pytest.skip(f"cannot mount tmpfs: {mounted.stderr.decode().strip()}")
            try:
                peer = swarm.start_peer("full")
                code = peer.wait(30)
                err = peer.stderr()
                assert code != 0, err
                assert "no space left on device" in err.lower(), err
                assert os.listdir(dest) == [], os.listdir(dest)
            finally:
                subprocess.run(["umount", "-l", str(dest)], check=False)

    def test_killed_around_completion_never_truncates(self, tmp_path: Path) -> None:
        """SIGKILL peers at random moments around their completion (when 0-2
        pieces are left, plus 0-150 ms; several runs): the target is either
        absent or the complete payload, never a truncated file."""
        rng = random.Random()
        with Swarm(tmp_path, size=2 * 2**20) as swarm:
            swarm.start_tracker()
            swarm.start_seeder()
            total = swarm.meta.num_pieces
            outcomes = {"absent": 0, "complete": 0}
            for i in range(8):
                name = f"k{i}"
                peer = swarm.start_peer(name, "--max-download-rate", "2M")
                left = rng.randrange(0, 3)
                wait_for(lambda: swarm.progress(name) >= total - left or not peer.alive(), 30,
                         f"{name} near completion", interval=0.01)
                time.sleep(rng.uniform(0, 0.15))
                peer.kill(signal.SIGKILL)
                target = swarm.target(name)
                if target.exists():
                    assert sha256(target) == swarm.digest, f"{name}: truncated/corrupt target"
                    outcomes["complete"] += 1
                else:
                    outcomes["absent"] += 1
            # Both sides of the rename are usually hit; the invariant above is
            # what the test asserts (timing on a loaded machine varies).
            print(f"outcomes after SIGKILL around completion: {outcomes}")
