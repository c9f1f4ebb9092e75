"""Unit tests for murder.peer.tap options: validation messages, parse_rate, config_from."""

from __future__ import annotations

import os

import pytest
from twisted.python import usage

from murder import metainfo
from murder.errors import MetainfoError
from murder.peer.tap import PeerOptions, SeederOptions, config_from, parse_rate
from murder.testing import build_torrent


@pytest.fixture
def torrent(tmp_path):
    """A valid torrent file on disk; returns (path, meta)."""
    meta, _ = build_torrent(b"x" * 100_000, name="release.tgz")
    path = tmp_path / "release.torrent"
    path.write_bytes(meta.encode())
    return str(path), meta


def peer(*args: str) -> PeerOptions:
    o = PeerOptions()
    o.parseOptions(list(args))
    return o


def seeder(*args: str) -> SeederOptions:
    o = SeederOptions()
    o.parseOptions(list(args))
    return o


def usage_error(fn, *args: str) -> str:
    with pytest.raises(usage.UsageError) as e:
        fn(*args)
    return str(e.value)


class ParseRateTests:
    """parse_rate: bytes per second with K/M/G (binary) suffixes."""

    @pytest.mark.parametrize("text, value", [
        ("0", 0), ("100", 100), ("500K", 500 * 1024), ("500k", 500 * 1024),
        ("12.5M", int(12.5 * 2**20)), ("1G", 2**30), ("2MB", 2 * 2**20),
        ("500KB/s", 500 * 1024), ("3M/s", 3 * 2**20), (" 7K ", 7 * 1024),
    ])
    def test_valid(self, text, value):
        """Plain numbers and suffixed rates convert to bytes per second."""
        assert parse_rate(text) == value

    @pytest.mark.parametrize("text", ["", "K", "fast", "1X", "inf", "nan", "--1"])
    def test_invalid(self, text):
        """Anything not a finite number (with suffix) is refused with an example."""
        with pytest.raises(ValueError, match=r"not a rate: .* \(use e\.g\. 0, 500K, 12M\)"):
            parse_rate(text)

    def test_negative(self):
        """A negative rate is refused."""
        with pytest.raises(ValueError, match="a rate cannot be negative"):
            parse_rate("-5K")


class PeerOptionsTests:
    """murder peer / twistd murder-peer option validation."""

    def test_neither_destination_nor_saveas(self, torrent):
        """One of --destination and --saveas is required."""
        assert usage_error(peer, "--torrent", torrent[0]) == \
            "give exactly one of --destination and --saveas"

    def test_both_destination_and_saveas(self, torrent, tmp_path):
        """--destination and --saveas together are refused."""
        assert usage_error(peer, "--torrent", torrent[0], "--destination", str(tmp_path),
                           "--saveas", str(tmp_path / "x")) == \
            "give exactly one of --destination and --saveas"

    def test_missing_torrent(self, tmp_path):
        """--torrent is required."""
        assert usage_error(peer, "--destination", str(tmp_path)) == "--torrent is required"

    def test_destination_not_a_directory(self, torrent, tmp_path):
        """--destination must be an existing directory."""
        missing = str(tmp_path / "nope")
        assert usage_error(peer, "--torrent", torrent[0], "--destination", missing) == \
            f"--destination {missing} is not a directory"

    def test_bad_torrent_file(self, tmp_path):
        """A malformed torrent gives a UsageError carrying the MetainfoError text."""
        bad = tmp_path / "bad.torrent"
        bad.write_bytes(b"d4:infod4:name3:abcee")
        with pytest.raises(MetainfoError) as expected:
            metainfo.load(str(bad))
        message = usage_error(peer, "--torrent", str(bad), "--destination", str(tmp_path))
        assert message == str(expected.value)
        assert message.startswith("invalid torrent: ")

    def test_unreadable_torrent_path(self, tmp_path):
        """A torrent path that does not exist is reported, not a traceback."""
        message = usage_error(peer, "--torrent", str(tmp_path / "none.torrent"),
                              "--destination", str(tmp_path))
        assert message.startswith("invalid torrent: cannot read ")
        assert "No such file or directory" in message

    @pytest.mark.parametrize("flag", ["--max-upload-rate", "--max-download-rate"])
    def test_bad_rate(self, flag, torrent, tmp_path):
        """A bad rate names the option and the bad value."""
        assert usage_error(peer, "--torrent", torrent[0], "--destination", str(tmp_path),
                           flag, "lots") == \
            f"{flag}: not a rate: 'LOTS' (use e.g. 0, 500K, 12M)"

    @pytest.mark.parametrize("args, message", [
        (["--port", "70000"], "--port 70000 is not a TCP port"),
        (["--tracker-timeout", "0"], "--tracker-timeout must be positive"),
        (["--max-connections", "0"], "--max-connections must be positive"),
        (["--pipeline", "-1"], "--pipeline must be positive"),
        (["--upload-slots", "-1"], "--upload-slots cannot be negative"),
        (["--seed-time", "-1"], "--seed-time and --max-linger cannot be negative"),
        (["--poor-turns", "-1"], "--poor-turns cannot be negative"),
        (["--poor-spread", "1.5"], "--poor-spread is a fraction from 0 to 1"),
    ])
    def test_numeric_bounds(self, args, message, torrent, tmp_path):
        """Out-of-range numbers are refused with a message naming the option."""
        assert usage_error(peer, "--torrent", torrent[0], "--destination", str(tmp_path),
                           *args) == message

    def test_config_destination(self, torrent, tmp_path):
        """--destination DIR targets DIR/<torrent name>; defaults are the documented ones."""
        path, meta = torrent
        config = config_from(peer("--torrent", path, "--destination", str(tmp_path),
                                  "--ip", "10.0.0.5", "--max-upload-rate", "1M",
                                  "--status-fd", "7", "--port", "7000", "--bind", "127.0.0.1"))
        assert config.role == "peer"
        assert config.path == os.path.join(str(tmp_path), "release.tgz")
        assert config.meta.info_hash == meta.info_hash
        assert config.ip == "10.0.0.5"
        assert config.seed_time == 30.0 and config.tracker_timeout == 60.0
        assert config.status_fd == 7
        assert (config.port, config.bind) == (7000, "127.0.0.1")
        assert config.swarm.max_upload_rate == 2**20
        assert config.swarm.super_seed is False
        assert config.swarm.poor_turns == 8
        assert config.swarm.poor_spread == 0.25

    def test_poor_turns_reaches_the_swarm_config(self, torrent, tmp_path):
        """--poor-turns K is the core's poor_turns (poorest-first upload turns)."""
        config = config_from(peer("--torrent", torrent[0], "--destination", str(tmp_path),
                                  "--poor-turns", "8"))
        assert config.swarm.poor_turns == 8

    def test_poor_spread_reaches_the_swarm_config(self, torrent, tmp_path):
        """--poor-spread F is the core's poor_spread (a per-host offset on the rank)."""
        config = config_from(peer("--torrent", torrent[0], "--destination", str(tmp_path),
                                  "--poor-turns", "8", "--poor-spread", "0.25"))
        assert config.swarm.poor_spread == 0.25

    def test_config_saveas(self, torrent, tmp_path, monkeypatch):
        """--saveas is used exactly (made absolute), whatever the torrent name."""
        monkeypatch.chdir(tmp_path)
        config = config_from(peer("--torrent", torrent[0], "--saveas", "out.bin",
                                  "--seed-until-swarm-done"))
        assert config.path == str(tmp_path / "out.bin")
        assert config.seed_until_swarm_done is True
        assert (config.port, config.bind) == (0, "")


class SeederOptionsTests:
    """murder seed / twistd murder-seeder option validation."""

    def test_missing_file(self, torrent):
        """--file is required."""
        assert usage_error(seeder, "--torrent", torrent[0]) == "--file is required"

    def test_missing_torrent(self, tmp_path):
        """--torrent is required for the seeder too."""
        assert usage_error(seeder, "--file", str(tmp_path)) == "--torrent is required"

    def test_config(self, torrent, tmp_path):
        """The seeder super-seeds by default; --no-super-seed and --skip-verify apply."""
        c = config_from(seeder("--torrent", torrent[0], "--file", str(tmp_path / "f")))
        assert c.role == "seeder" and c.path == str(tmp_path / "f")
        assert c.swarm.super_seed is True and c.skip_verify is False
        c = config_from(seeder("--torrent", torrent[0], "--file", str(tmp_path / "f"),
                               "--no-super-seed", "--skip-verify"))
        assert c.swarm.super_seed is False and c.skip_verify is True
