"""The three legacy Capistrano scripts: arguments, messages, exit codes.

The scripts are run as the gem runs them (``python <dist>/murder_*.py …``) in
subprocesses; the argument mapping is also checked in memory against the
tracker's own ``Options``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from compat_recipes import (DIST, NOT_INSTALLED_SUFFIX, compat_module, recipe_env, run_script,
                            wait_for_port)
from conftest import free_port
from murder import metainfo

compat = compat_module()


def _python_without_murder() -> list[str]:
    """An interpreter (in isolated mode) that cannot import murder, or skip."""
    candidates = ["/usr/bin/python3", os.path.realpath(sys.executable)]
    for exe in candidates:
        if not os.path.exists(exe):
            continue
        probe = subprocess.run([exe, "-I", "-c", "import murder"], capture_output=True)
        version = subprocess.run(
            [exe, "-I", "-c", "import sys; print(sys.version_info >= (3, 11))"],
            capture_output=True, text=True)
        if probe.returncode != 0 and version.stdout.strip() == "True":
            return [exe, "-I"]
    pytest.skip("every Python 3.11 here can import murder")


class ArgumentCountTests:
    """Wrong argument counts print the original texts and exit 1."""

    @pytest.mark.parametrize("args", [(), ("a",), ("a", "b"), ("a", "b", "c", "d")])
    def test_make_torrent_usage(self, args, tmp_path):
        """murder_make_torrent.py wants exactly 3 arguments; else the legacy usage, exit 1."""
        result = run_script("murder_make_torrent.py", *args, cwd=tmp_path)
        assert result.returncode == 1
        lines = result.stdout.splitlines()
        assert lines[0] == "Incorrect number of arguments"
        assert "Usage:" in lines
        assert "python murder_make_torrent.py <file> <trackerhost:port> <target>" in result.stdout
        assert list(tmp_path.iterdir()) == []

    @pytest.mark.parametrize("args", [(), ("peer",), ("peer", "t.torrent"),
                                      ("peer", "t.torrent", "out", "127.0.0.1", "extra")])
    def test_client_usage(self, args, tmp_path):
        """murder_client.py wants 3 or 4 arguments; else the legacy usage, exit 1."""
        result = run_script("murder_client.py", *args, cwd=tmp_path)
        assert result.returncode == 1
        assert result.stdout.splitlines()[0] == "Incorrect number of arguments"
        assert "python murder_client.py peer/seed out.torrent OUT.OUT 127.0.0.1" in result.stdout
        assert "The last parameter is the local ip address" in result.stdout

    def test_client_accepts_three_arguments(self, tmp_path):
        """Three arguments (the recipes' empty `host` expansion) are not a usage error."""
        result = run_script("murder_client.py", "seeder", str(tmp_path / "missing.torrent"),
                            str(tmp_path / "missing"), cwd=tmp_path)
        assert result.returncode == 1
        assert "Incorrect number of arguments" not in result.stdout
        assert "missing.torrent" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


class TrackerOptionTests:
    """murder_tracker.py maps BitTornado ``--key value`` pairs onto the tracker."""

    def test_unknown_key(self, tmp_path):
        """An unknown key is an error with a hint, exit 2, and nothing is started."""
        result = run_script("murder_tracker.py", "--port", "1", "--nat_chek", "0", cwd=tmp_path)
        assert result.returncode == 2
        assert "murder_tracker.py: error: unknown option --nat_chek" in result.stderr
        assert "--help" in result.stderr and "--reannounce_interval" in result.stderr
        assert not (tmp_path / "data").exists()

    @pytest.mark.parametrize("args, message", [
        (("--port",), "option --port needs a value"),
        (("8998",), "unexpected argument '8998'"),
        (("--port", "abc"), "--port must be an integer, not 'abc'"),
        (("--allowed_dir", "/nonexistent/dir"), "is not a directory"),
    ])
    def test_bad_values(self, args, message, tmp_path):
        """A missing value, a positional argument or a bad value exits 2 with the reason."""
        result = run_script("murder_tracker.py", *args, cwd=tmp_path)
        assert result.returncode == 2
        assert message in result.stderr

    def test_help(self):
        """--help lists every accepted key and exits 0."""
        result = run_script("murder_tracker.py", "--help")
        assert result.returncode == 0
        for key in compat.TRACKER_KEYS:
            assert f"--{key}" in result.stdout

    def test_last_value_wins(self):
        """A key given twice keeps its last value, as BitTornado's parser did."""
        pairs = compat.parse_legacy_pairs(["--port", "1", "--dfile", "d", "--port", "2"])
        assert pairs == {"port": "2", "dfile": "d"}

    def test_defaults_are_the_legacy_ones(self):
        """With no arguments the tracker gets port 8998, ./data, 15 s, 500 peers, 120 s,
        and leechers are asked for the same 15 s as everyone (no shorter interval)."""
        from murder.tracker import tap

        argv, logfile = compat.tracker_argv(dict(compat.TRACKER_DEFAULTS))
        options = tap.Options()
        options.parseOptions(argv)
        config = options.config
        assert (config.listen, config.dfile, config.interval, config.numwant_max,
                config.peer_timeout, config.save_interval) == ("tcp:8998", "data", 15, 500,
                                                               120.0, 300.0)
        assert config.leecher_interval is None
        assert logfile is None

    def test_every_key_maps(self, tmp_path):
        """Each supported key reaches the matching tracker setting."""
        from murder.tracker import tap

        pairs = dict(compat.TRACKER_DEFAULTS)
        pairs.update(compat.parse_legacy_pairs([
            "--port", "9001", "--bind", "127.0.0.2", "--dfile", str(tmp_path / "state"),
            "--reannounce_interval", "20", "--response_size", "50",
            "--timeout_downloaders_interval", "90", "--allowed_dir", str(tmp_path),
            "--save_dfile_interval", "60", "--logfile", str(tmp_path / "log")]))
        argv, logfile = compat.tracker_argv(pairs)
        options = tap.Options()
        options.parseOptions(argv)
        config = options.config
        assert config.listen == "tcp:9001:interface=127.0.0.2"
        assert (config.dfile, config.interval, config.numwant_max, config.peer_timeout,
                config.allowed_dir, config.save_interval) == (
            str(tmp_path / "state"), 20, 50, 90.0, str(tmp_path), 60.0)
        assert logfile == str(tmp_path / "log")

    @pytest.mark.integration
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


class MakeTorrentTests:
    """murder_make_torrent.py: silent success, legacy metainfo, clear failures."""

    def test_legacy_torrent(self, tmp_path):
        """The torrent has make-torrent's automatic piece length (not BitTornado's
        fixed 2^18: nothing in the recipes reads it, and smaller pieces spread
        sooner), http://host:port/announce, the file's name and a creation
        date; nothing is printed."""
        payload = tmp_path / "release.tgz"
        payload.write_bytes(os.urandom(700_000))
        before = int(time.time())
        result = run_script("murder_make_torrent.py", str(payload), "tracker.example:8998",
                            str(tmp_path / "release.tgz.torrent"), cwd=tmp_path)
        assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
        meta = metainfo.load(str(tmp_path / "release.tgz.torrent"))
        assert meta.piece_length == metainfo.auto_piece_length(700_000) == 2**17
        assert meta.announce == "http://tracker.example:8998/announce"
        assert meta.name == "release.tgz"
        assert meta.total_length == 700_000 and meta.num_pieces == 6
        assert meta.creation_date is not None and meta.creation_date >= before - 1
        assert sorted(p.name for p in tmp_path.iterdir()) == ["release.tgz",
                                                              "release.tgz.torrent"]

    def test_missing_path(self, tmp_path):
        """A path that does not exist fails at once: one line, exit 1, no target."""
        started = time.monotonic()
        result = run_script("murder_make_torrent.py", str(tmp_path / "nope.tgz"),
                            "127.0.0.1:8998", str(tmp_path / "nope.tgz.torrent"), timeout=30)
        assert time.monotonic() - started < 20
        assert result.returncode == 1
        assert result.stderr.strip().splitlines() == [
            f"murder_make_torrent.py: cannot make a torrent of {tmp_path / 'nope.tgz'}: "
            "no such file or directory"]
        assert not (tmp_path / "nope.tgz.torrent").exists()

    def test_unwritable_target(self, tmp_path):
        """A target in a missing folder fails with one line and exit 1."""
        payload = tmp_path / "p"
        payload.write_bytes(b"x" * 1000)
        result = run_script("murder_make_torrent.py", str(payload), "h:1",
                            str(tmp_path / "no" / "such" / "p.torrent"))
        assert result.returncode == 1
        assert len(result.stderr.strip().splitlines()) == 1
        assert "p.torrent" in result.stderr or "No such file" in result.stderr

    def test_signing_key_from_environment(self, tmp_path):
        """With MURDER_SIGNING_KEY the torrent carries a signature that verifies."""
        trust = pytest.importorskip("murder.trust")
        pair = trust.generate_key_pair(str(tmp_path / "key"))
        payload = tmp_path / "p.tgz"
        payload.write_bytes(os.urandom(300_000))
        result = run_script("murder_make_torrent.py", str(payload), "127.0.0.1:8998",
                            str(tmp_path / "p.tgz.torrent"),
                            env=recipe_env({"MURDER_SIGNING_KEY": pair.private_path}))
        assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
        meta = metainfo.load(str(tmp_path / "p.tgz.torrent"))
        signer = trust.verify_metainfo(meta, [trust.load_public_key(pair.public_path)])
        assert signer == pair.fingerprint

    def test_bad_signing_key(self, tmp_path):
        """An unreadable MURDER_SIGNING_KEY fails with exit 1 and writes no torrent."""
        payload = tmp_path / "p.tgz"
        payload.write_bytes(b"y" * 5000)
        result = run_script("murder_make_torrent.py", str(payload), "127.0.0.1:8998",
                            str(tmp_path / "p.tgz.torrent"),
                            env=recipe_env({"MURDER_SIGNING_KEY": str(tmp_path / "nokey")}))
        assert result.returncode == 1
        assert "nokey" in result.stderr
        assert not (tmp_path / "p.tgz.torrent").exists()


class NotInstalledTests:
    """Without the murder package each script says how to install it, exit 1."""

    @pytest.mark.parametrize("script, args", [
        ("murder_tracker.py", ()),
        ("murder_make_torrent.py", ("f", "h:1", "f.torrent")),
        ("murder_client.py", ("peer", "f.torrent", "f", "127.0.0.1")),
        ("murder_client.py", ("seeder", "f.torrent", "f")),
    ])
    def test_message(self, script, args, tmp_path):
        """One line `<script>: the murder package is not installed (…)`, exit 1."""
        python = _python_without_murder()
        # A copy of dist/ outside the repository: nothing on sys.path leads to murder.
        dist = tmp_path / "dist"
        shutil.copytree(DIST, dist)
        env = {"PATH": "/usr/bin:/bin"}
        result = subprocess.run([*python, str(dist / script), *args], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=30)
        assert result.returncode == 1
        assert result.stdout == ""
        assert result.stderr.splitlines() == [f"{script}: {NOT_INSTALLED_SUFFIX}"]
        assert sorted(p.name for p in tmp_path.iterdir()) == ["dist"]


class LocalAddressTests:
    """The address announced when the recipe's <ip> is empty or missing."""

    def test_route_toward_tracker(self):
        """The source address toward the tracker host is used (no packet is sent)."""
        assert compat.detect_local_ip(["http://127.0.0.1:8998/announce"]) == "127.0.0.1"

    def test_fallback_to_hostname(self):
        """No usable tracker URL: the address of this host's name, else empty."""
        import socket

        try:
            expected = socket.gethostbyname(socket.gethostname())
        except OSError:
            expected = ""
        assert compat.detect_local_ip(["udp://", "not a url", "http://:80/x"]) == expected


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


def _proc_status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


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
        tracker = subprocess.Popen(
            [sys.executable, str(DIST / "murder_tracker.py"), "--port", str(port),
             "--bind", "127.0.0.1"], cwd=tmp_path, env=recipe_env(),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        seeder = None
        try:
            wait_for_port("127.0.0.1", port)
            payload, torrent = _legacy_torrent(tmp_path, port)
            seeder = subprocess.Popen(
                [sys.executable, str(DIST / "murder_client.py"), "seeder", str(torrent),
                 str(payload), "127.0.0.1"], cwd=tmp_path, env=recipe_env(),
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
            assert seeder.stdout.readline() == b"done and done\n"
            time.sleep(1.5)
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
        tracker = subprocess.Popen(
            [sys.executable, str(DIST / "murder_tracker.py"), "--port", str(port),
             "--bind", "127.0.0.1"], cwd=tmp_path, env=recipe_env(),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        peer = None
        saveas = tmp_path / "out" / "release.tgz"
        saveas.parent.mkdir()
        pattern = f"murder_client.py peer.*{saveas}"
        try:
            wait_for_port("127.0.0.1", port)
            _, torrent = _legacy_torrent(tmp_path, port)  # no seeder: it cannot finish
            peer = subprocess.Popen(
                [sys.executable, str(DIST / "murder_client.py"), "peer", str(torrent),
                 str(saveas), "127.0.0.1"], cwd=tmp_path, env=recipe_env(),
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
            deadline = time.monotonic() + 20
            while len(pids_matching(pattern)) < 2 and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(1.0)  # let the worker announce and wait for peers
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
