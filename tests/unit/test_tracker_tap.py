"""Unit tests for murder.tracker.options and .tap: options, plugin, state service on a Clock."""

from __future__ import annotations

import dataclasses
import os

import bencodepy
import pytest
from twisted.application.service import IServiceMaker
from twisted.internet.task import Clock
from twisted.plugin import getPlugins
from twisted.python import usage

from murder import metainfo
from murder.tracker.announce_codec import AnnounceRequest
from murder.tracker.store import PeerStore
from murder.tracker.options import Options, TrackerConfig
from murder.tracker.tap import AllowedDir, TrackerStateService


def parse(*argv: str) -> TrackerConfig:
    options = Options()
    options.parseOptions(list(argv))
    return options.config


def announce(store: PeerStore, ih: bytes, n: int = 1) -> None:
    store.announce(AnnounceRequest(ih, b"%020d" % n, "10.0.0.1", 6881, 0, 0, 5, "", True,
                                   False, 50))


class OptionsTests:
    """Options validates everything and builds a frozen TrackerConfig."""

    def test_defaults(self, tmp_path, monkeypatch):
        """Defaults match the original Murder tracker (port 8998, 15 s, 500 peers, 120 s)."""
        monkeypatch.chdir(tmp_path)
        c = parse()
        assert (c.listen, c.dfile, c.interval, c.numwant_max, c.peer_timeout,
                c.save_interval) == ("tcp:8998", "data", 15, 500, 120.0, 300.0)
        assert "127.0.0.0/8" in c.trusted_networks
        with pytest.raises(dataclasses.FrozenInstanceError):
            c.interval = 3  # type: ignore[misc]

    def test_port_bind_listen(self):
        """--port/--bind build an endpoint; --listen overrides them."""
        assert parse("--port", "9000").listen == "tcp:9000"
        assert parse("--port", "9000", "--bind", "127.0.0.1").listen == \
            "tcp:9000:interface=127.0.0.1"
        assert parse("--bind", "::1").listen == "tcp6:8998:interface=\\:\\:1"
        assert parse("--port", "1", "--listen", "tcp:7000:interface=127.0.0.1").listen == \
            "tcp:7000:interface=127.0.0.1"

    def test_numbers(self, tmp_path):
        """Numeric options are converted and numwant-default is capped by numwant-max."""
        c = parse("--interval", "30", "--min-interval", "10", "--numwant-max", "50",
                  "--peer-timeout", "60", "--max-torrents", "5", "--dfile", "",
                  "--allowed-dir", str(tmp_path))
        assert (c.interval, c.min_interval, c.numwant_default, c.numwant_max,
                c.expire_interval, c.max_torrents, c.dfile, c.allowed_dir) == \
            (30, 10, 50, 50, 15.0, 5, None, str(tmp_path))

    @pytest.mark.parametrize("argv, message", [
        (["--port", "http"], "--port must be an integer, not 'http'"),
        (["--port", "70000"], "--port must be between 0 and 65535, not 70000"),
        (["--bind", "example.com"], "--bind must be an IP address, not 'example.com'"),
        (["--listen", "bogus:1"], "--listen 'bogus:1' is not a server endpoint string"),
        (["--interval", "0"], "--interval must be between 1 and 86400, not 0"),
        (["--min-interval", "20"], "--min-interval must be between 1 and 15, not 20"),
        (["--peer-timeout", "-5"], "--peer-timeout must be a positive number of seconds"),
        (["--save-interval", "soon"], "--save-interval must be a number of seconds, not 'soon'"),
        (["--max-peers", "0"], "--max-peers must be >= 1, not 0"),
        (["--dfile", "/nonexistent/dir/data"], "directory /nonexistent/dir does not exist"),
        (["--dfile", "/"], "--dfile '/' is a directory"),
        (["--allowed-dir", "/nonexistent"], "--allowed-dir '/nonexistent' is not a directory"),
        (["--trusted-networks", "10.0.0.0/8,bad"], "--trusted-networks:"),
        (["--no-such-option"], "option --no-such-option not recognized"),
    ])
    def test_errors(self, argv, message):
        """Each bad value gives a UsageError naming the option."""
        with pytest.raises(usage.UsageError) as caught:
            parse(*argv)
        assert message in str(caught.value)


class PluginTests:
    """twistd finds the murder-tracker plugin."""

    def test_discovered(self):
        """getPlugins(IServiceMaker) includes tapname murder-tracker pointing at our tap."""
        makers = {p.tapname: p for p in getPlugins(IServiceMaker)}
        assert "murder-tracker" in makers
        assert makers["murder-tracker"].options is Options


def _torrent(tmp_path, name: str, data: bytes) -> tuple[str, bytes]:
    payload = tmp_path / "payloads" / name
    payload.parent.mkdir(exist_ok=True)
    payload.write_bytes(data)
    torrent = metainfo.create(str(payload), "http://t/announce", creation_date=1)
    path = tmp_path / "allowed" / f"{name}.torrent"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(bencodepy.encode(torrent))
    return str(path), metainfo.info_hash(torrent[b"info"])


class StateServiceTests:
    """The state service loads, expires, rescans and saves on the injected clock."""

    def service(self, tmp_path, **overrides) -> tuple[TrackerStateService, Clock]:
        clock = Clock()
        config = TrackerConfig(**{"dfile": str(tmp_path / "data"), **overrides})
        store = PeerStore(clock, peer_timeout=config.peer_timeout)
        return TrackerStateService(store, config, clock), clock

    def test_save_periodic_and_on_stop(self, tmp_path):
        """The dfile is written every save_interval and at stop, and reloaded at start."""
        svc, clock = self.service(tmp_path, save_interval=10)
        svc.startService()
        announce(svc.store, b"\x01" * 20)
        assert not (tmp_path / "data").exists()
        clock.advance(10)
        assert (tmp_path / "data").exists()
        announce(svc.store, b"\x02" * 20)
        svc.stopService()
        again, _ = self.service(tmp_path)
        again.startService()
        assert set(again.store.torrents) == {b"\x01" * 20, b"\x02" * 20}
        again.stopService()

    def test_expiry_loop_survives_failure(self, tmp_path):
        """A failing expiry run is logged and the next run still happens."""
        svc, clock = self.service(tmp_path, expire_interval=5)
        calls = []

        def flaky():
            calls.append(clock.seconds())
            if len(calls) == 1:
                raise RuntimeError("transient")
            return 0
        svc.store.expire = flaky
        svc.startService()
        clock.advance(5)
        clock.advance(5)
        assert calls == [5, 10]
        svc.stopService()

    def test_allowed_dir_rescan(self, tmp_path):
        """Only torrents in the allowed dir are tracked; broken ones are ignored; rescans add new ones."""
        path_a, ih_a = _torrent(tmp_path, "a.bin", b"a" * 1000)
        (tmp_path / "allowed" / "broken.torrent").write_bytes(b"not bencode")
        svc, clock = self.service(tmp_path, allowed_dir=str(tmp_path / "allowed"),
                                  allowed_rescan=30)
        svc.startService()
        assert set(svc.store.allowed) == {ih_a}
        assert svc.store.known[ih_a].size == 1000 and svc.store.known[ih_a].name == "a.bin"
        _, ih_b = _torrent(tmp_path, "b.bin", b"b" * 10)
        clock.advance(30)
        assert set(svc.store.allowed) == {ih_a, ih_b}
        svc.stopService()

    def test_allowed_dir_reuses_unchanged(self, tmp_path):
        """Unchanged files are not re-read on rescan; removed ones disappear."""
        path_a, ih_a = _torrent(tmp_path, "a.bin", b"a")
        scanner = AllowedDir(str(tmp_path / "allowed"))
        assert set(scanner.scan()) == {ih_a}
        os.unlink(path_a)
        assert scanner.scan() == {}


class TuneGCTests:
    """The tracker process makes cyclic GC rare (full collections stall every announce)."""

    def test_young_threshold_raised(self):
        """tune_gc raises the young-generation threshold and keeps the older ones."""
        import gc

        from murder.tracker.tap import GC_YOUNG_THRESHOLD, tune_gc

        before = gc.get_threshold()
        try:
            gc.set_threshold(700, 10, 10)
            tune_gc()
            assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, 10, 10)
            assert GC_YOUNG_THRESHOLD > 700
        finally:
            gc.set_threshold(*before)
