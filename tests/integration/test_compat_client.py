"""The legacy Capistrano scripts doing their work: tracker, seeder, peer on loopback.

The scripts are run as the gem runs them (``python <dist>/murder_*.py …``) in
subprocesses, over the real package: a tracker that serves and logs, a
seeder that serves until SIGHUP, a peer that detaches or is interrupted.
Their arguments, messages and exit codes are in ``test_compat_scripts.py``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from compat_recipes import (DIST, compat_module, recipe_env, run_script,
                            wait_for_port)
from harness import tracker_counts, wait_for
from conftest import free_port
from murder import metainfo

compat = compat_module()


def _legacy_torrent(tmp_path: Path, announce_port: int, size: int = 700_000) -> tuple[Path, Path]:
    """A payload and its legacy torrent (2^18 pieces) announcing to 127.0.0.1:port."""
    import bencodepy

    payload = tmp_path / "release.tgz"
    payload.write_bytes(os.urandom(size))
    torrent = tmp_path / "release.tgz.torrent"
    torrent.write_bytes(bencodepy.encode(metainfo.create(
        str(payload), f"http://127.0.0.1:{announce_port}/announce",
        piece_length=metainfo.LEGACY_PIECE_LENGTH)))
    return payload, torrent


def _legacy_tracker(tmp_path: Path, port: int) -> subprocess.Popen:
    """murder_tracker.py on 127.0.0.1:``port``, returned once it listens."""
    tracker = subprocess.Popen(
        [sys.executable, str(DIST / "murder_tracker.py"), "--port", str(port),
         "--bind", "127.0.0.1"], cwd=tmp_path, env=recipe_env(),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        wait_for_port("127.0.0.1", port)
    except BaseException:
        tracker.kill()
        tracker.wait()
        raise
    return tracker


def _proc_status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


class TrackerScriptTests:
    """murder_tracker.py runs the real tracker."""

    def test_runs_and_logs_to_logfile(self, tmp_path):
        """The tracker serves announces with the legacy interval, writes ./data at exit,
        and --logfile receives its log; MURDER_TRACKER_ARGS supplies extra pairs."""
        import bencodepy

        port = free_port()
        env = recipe_env({"MURDER_TRACKER_ARGS": "--port 1 --bind 127.0.0.1"})
        proc = subprocess.Popen(
            [sys.executable, str(DIST / "murder_tracker.py"), "--port", str(port),
             "--logfile", "tracker.log"], cwd=tmp_path, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        try:
            wait_for_port("127.0.0.1", port)
            import urllib.request

            query = ("info_hash=" + "%41" * 20 + "&peer_id=" + "B" * 20 +
                     "&port=6881&uploaded=0&downloaded=0&left=10&compact=1&event=started")
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/announce?{query}",
                                        timeout=10) as reply:
                answer = bencodepy.decode(reply.read())
            assert answer[b"interval"] == 15
        finally:
            proc.terminate()
            out, err = proc.communicate(timeout=20)
        assert proc.returncode == 0
        assert out == b"" and err == b""
        assert "murder tracker listening on tcp:%d:interface=127.0.0.1" % port in \
            (tmp_path / "tracker.log").read_text()
        assert (tmp_path / "data").is_file()


@pytest.mark.integration
class ClientTests:
    """murder_client.py peer/seeder over the real package, on loopback."""

    def test_peer_already_complete_detaches(self, tmp_path):
        """A payload already complete at <saveas> gives `done and done`, exit 0 at
        once, and leaves a detached seeder: own session, SIGHUP ignored, stdio on
        /dev/null, command line still matching the recipes' pkill pattern.  It is
        a fork of the foreground command, not a second interpreter started with
        the status fd in its environment (each Python start costs every host
        CPU at the same moment of a deploy)."""
        from compat_recipes import kill_pids, pids_matching

        payload, torrent = _legacy_torrent(tmp_path, free_port())
        original = payload.read_bytes()
        pattern = f"murder_client.py peer.*{payload}"
        env = recipe_env({"MURDER_TRACKER_TIMEOUT": "30"})
        try:
            started = time.monotonic()
            result = run_script("murder_client.py", "peer", str(torrent), str(payload),
                                "127.0.0.1", cwd=tmp_path, env=env, timeout=60)
            assert (result.returncode, result.stdout) == (0, "done and done\n")
            assert time.monotonic() - started < 20
            children = pids_matching(pattern)
            assert len(children) == 1
            pid = children[0]
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            session = int(fields[3])
            assert session == pid != os.getsid(0)
            assert int(_proc_status(pid)["SigIgn"], 16) & (1 << (signal.SIGHUP - 1))
            for fd in (0, 1, 2):
                assert os.readlink(f"/proc/{pid}/fd/{fd}") == "/dev/null"
            with open(f"/proc/{pid}/environ", "rb") as f:
                assert b"MURDER_COMPAT_STATUS_FD=" not in f.read()
            assert payload.read_bytes() == original
        finally:
            kill_pids(pids_matching(pattern))

    def test_peer_bad_torrent(self, tmp_path):
        """An unreadable torrent fails with one line, exit 1, and no file at <saveas>."""
        torrent = tmp_path / "bad.torrent"
        torrent.write_bytes(b"this is not bencode")
        result = run_script("murder_client.py", "peer", str(torrent), str(tmp_path / "out"),
                            "127.0.0.1", cwd=tmp_path, timeout=60)
        assert result.returncode == 1
        assert result.stdout == ""
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("murder_client.py: ")
        assert "torrent" in lines[0]
        assert not (tmp_path / "out").exists()

    def test_seeder_bad_payload(self, tmp_path):
        """A payload that does not match the torrent is refused: one line, exit 1."""
        payload, torrent = _legacy_torrent(tmp_path, free_port())
        with open(payload, "r+b") as f:
            f.seek(300_000)
            f.write(b"corrupted")
        result = run_script("murder_client.py", "seeder", str(torrent), str(payload),
                            "127.0.0.1", cwd=tmp_path, timeout=60)
        assert result.returncode == 1
        assert "done and done" not in result.stdout
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "piece 1" in lines[0]

    def test_seeder_runs_until_hangup(self, tmp_path):
        """The seeder prints `done and done` after verifying, keeps serving, and stops
        cleanly on SIGHUP (what screen sends when stop_seeding kills it)."""
        port = free_port()
        tracker = _legacy_tracker(tmp_path, port)
        seeder = None
        try:
            payload, torrent = _legacy_torrent(tmp_path, port)
            seeder = subprocess.Popen(
                [sys.executable, str(DIST / "murder_client.py"), "seeder", str(torrent),
                 str(payload), "127.0.0.1"], cwd=tmp_path, env=recipe_env(),
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
            assert seeder.stdout.readline() == b"done and done\n"
            # Serving: the tracker counts it as a seeder (it announced after "done").
            info_hash = metainfo.load(str(torrent)).info_hash
            wait_for(lambda: seeder.poll() is not None or tracker_counts(port, info_hash)[0],
                     20, "the seeder's announce")
            assert seeder.poll() is None
            seeder.send_signal(signal.SIGHUP)
            out, err = seeder.communicate(timeout=20)
            assert seeder.returncode == 0, err
        finally:
            for proc in (seeder, tracker):
                if proc is not None and proc.poll() is None:
                    proc.kill()
                    proc.wait()

    def test_peer_interrupted_before_complete(self, tmp_path):
        """SIGTERM to the foreground peer before completion (operator ^C, Capistrano
        giving up) stops the background download too: exit 1, one line, no
        process and no file left."""
        from compat_recipes import pids_matching, wait_until_gone

        port = free_port()
        tracker = _legacy_tracker(tmp_path, port)
        peer = None
        saveas = tmp_path / "out" / "release.tgz"
        saveas.parent.mkdir()
        pattern = f"murder_client.py peer.*{saveas}"
        try:
            _, torrent = _legacy_torrent(tmp_path, port)  # no seeder: it cannot finish
            peer = subprocess.Popen(
                [sys.executable, str(DIST / "murder_client.py"), "peer", str(torrent),
                 str(saveas), "127.0.0.1"], cwd=tmp_path, env=recipe_env(),
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
            wait_for(lambda: len(pids_matching(pattern)) >= 2, 20, "the detached worker")
            # The worker runs the download: the tracker counts it as a leecher.
            info_hash = metainfo.load(str(torrent)).info_hash
            wait_for(lambda: tracker_counts(port, info_hash)[1], 20, "the worker's announce")
            peer.terminate()
            out, err = peer.communicate(timeout=30)
            assert peer.returncode == 1
            assert out == b""
            assert err.decode().splitlines() == ["murder_client.py: interrupted by signal 15"]
            assert wait_until_gone(pattern) == []
            assert os.listdir(saveas.parent) == []
        finally:
            from compat_recipes import kill_pids

            kill_pids(pids_matching(pattern))
            tracker.terminate()
            tracker.wait(20)
