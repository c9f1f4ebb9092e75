"""The three legacy Capistrano scripts: arguments, messages, exit codes.

The scripts are run as the gem runs them (``python <dist>/murder_*.py …``) in
subprocesses; the argument mapping is also checked in memory against the
tracker's own ``Options``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest

from compat_recipes import (DIST, NOT_INSTALLED_SUFFIX, compat_module, recipe_env, run_script)
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
