"""Real-process tests: twistd murder-tracker, murder tracker, aria2c and libtorrent.

Every process is started on a free loopback port, every wait is bounded, and
every process is killed by its PID in a ``finally``.
"""

from __future__ import annotations

import datetime
import http.client
import ipaddress
import json
import os
import shutil
import signal
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path
from urllib.parse import quote_from_bytes

import bencodepy
import pytest

from harness import wait_for
from conftest import free_port, stop_process as stop, venv_bin
from murder import metainfo

IH = b"\x5a" * 20


def http_get(url: str, timeout: float = 5.0, context: ssl.SSLContext | None = None) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout, context=context) as response:
        return response.read()


class Server:
    """A tracker process on a free port."""

    def __init__(self, argv: list[str], port: int, cwd: Path,
                 context: ssl.SSLContext | None = None) -> None:
        self.port = port
        self.context = context
        self.base = f"{'https' if context else 'http'}://127.0.0.1:{port}"
        self.log_path = cwd / f"tracker-{port}-{time.monotonic_ns()}.log"
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(argv, cwd=cwd, stdout=self.log, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: self.proc.poll() is not None or self.get("/scrape"),
                     20, "tracker to listen")
        except BaseException:
            self.stop(signal.SIGKILL)
            raise
        assert self.proc.poll() is None, self.output()

    def output(self) -> str:
        return self.log_path.read_text()

    def get(self, path: str) -> bytes:
        return http_get(self.base + path, context=self.context)

    def announce(self, n: int, ih: bytes = IH, **params: str) -> dict:
        query = {"peer_id": f"-IT0001-{n:012d}", "port": str(7000 + n), "left": "0",
                 "compact": "1", **params}
        url = (f"{self.base}/announce?info_hash={quote_from_bytes(ih)}&"
               + "&".join(f"{k}={v}" for k, v in query.items()))
        return bencodepy.decode(http_get(url, context=self.context))

    def scrape(self) -> dict:
        return bencodepy.decode(self.get("/scrape"))[b"files"]

    def status(self) -> dict:
        return json.loads(self.get("/status.json"))

    def stop(self, sig: int = signal.SIGTERM) -> int:
        code = stop(self.proc, sig)
        self.log.close()
        return code


def twistd_tracker(tmp_path: Path, port: int, *extra: str) -> Server:
    return Server([venv_bin("twistd"), "-n", "--pidfile=", "murder-tracker", "--port", str(port),
                   "--bind", "127.0.0.1", "--dfile", str(tmp_path / "data"), *extra],
                  port, tmp_path)


@pytest.mark.integration
class TwistdTrackerTests:
    """twistd -n murder-tracker serves, saves on SIGTERM, restores on restart."""

    def test_state_survives_restart(self, tmp_path):
        """Peers announced before a SIGTERM are scraped back after a restart."""
        port = free_port()
        server = twistd_tracker(tmp_path, port)
        try:
            server.announce(1, left="0", event="completed")
            reply = server.announce(2, left="10", event="started")
            assert reply[b"complete"] == 1 and len(reply[b"peers"]) == 6
        finally:
            # twistd re-raises the signal that stopped it, after a clean shutdown.
            assert server.stop(signal.SIGTERM) in (0, -signal.SIGTERM)
        assert "saved dfile" in server.output()
        assert bencodepy.decode((tmp_path / "data").read_bytes())[b"version"] == 1
        server = twistd_tracker(tmp_path, port)
        try:
            assert server.scrape() == {IH: {b"complete": 1, b"incomplete": 1, b"downloaded": 1}}
        finally:
            server.stop()

    def test_corrupt_dfile_moved_aside(self, tmp_path):
        """A corrupt dfile is renamed aside and the tracker starts empty."""
        (tmp_path / "data").write_bytes(b"d7:version")
        server = twistd_tracker(tmp_path, free_port())
        try:
            assert server.scrape() == {}
        finally:
            server.stop()
        assert [p.name for p in tmp_path.glob("data.corrupt-*")]
        assert "corrupt dfile" in server.output()


@pytest.mark.integration
class ForegroundTrackerTests:
    """`murder tracker` runs in the foreground and stops cleanly."""

    def test_sigint_saves_and_exits_zero(self, tmp_path):
        """SIGINT stops it with exit 0 after saving the dfile."""
        port = free_port()
        server = Server([venv_bin("murder"), "tracker", "--port", str(port), "--bind",
                         "127.0.0.1"], port, tmp_path)
        try:
            server.announce(1, left="5")
        finally:
            code = server.stop(signal.SIGINT)
        assert code == 0, server.output()
        saved = bencodepy.decode((tmp_path / "data").read_bytes())
        assert list(saved[b"torrents"]) == [IH]
        assert "announce update" not in server.output()

    def test_port_in_use(self, tmp_path):
        """A port already bound gives exit 1 and one line on stderr."""
        port = free_port()
        server = twistd_tracker(tmp_path, port)
        try:
            result = subprocess.run(
                [venv_bin("murder"), "tracker", "--port", str(port), "--bind", "127.0.0.1",
                 "--dfile", ""], capture_output=True, text=True, timeout=30, cwd=tmp_path)
        finally:
            server.stop()
        assert result.returncode == 1
        lines = [ln for ln in result.stderr.splitlines() if not ln[:4].isdigit()]
        assert len(lines) == 1 and "cannot listen" in lines[0] and "in use" in lines[0]


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A key and a certificate for 127.0.0.1, valid for a day."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(key, hashes.SHA256()))
    key_path, cert_path = tmp_path / "key.pem", tmp_path / "cert.pem"
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


@pytest.mark.integration
class TLSTrackerTests:
    """The tracker serves HTTPS on an ssl: endpoint string, with keep-alive."""

    def test_https_announce_keep_alive(self, tmp_path):
        """Over --listen ssl:..., announces work and two requests share one TLS connection."""
        key, cert = _self_signed(tmp_path)
        port = free_port()
        context = ssl.create_default_context(cafile=str(cert))
        server = Server([venv_bin("murder"), "tracker", "--dfile", "", "--listen",
                         f"ssl:{port}:interface=127.0.0.1:privateKey={key}:certKey={cert}"],
                        port, tmp_path, context=context)
        try:
            assert server.announce(1, left="0")[b"complete"] == 1
            conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=5)
            try:
                conn.request("GET", "/scrape?info_hash=" + quote_from_bytes(IH))
                first = conn.getresponse()
                assert first.status == 200 and first.read()
                sock = conn.sock
                conn.request("GET", "/status.json")
                second = conn.getresponse()
                assert json.loads(second.read())["totals"]["seeders"] == 1
                assert conn.sock is sock, "the server closed the kept-alive connection"
            finally:
                conn.close()
        finally:
            server.stop()


def _payload_torrent(tmp_path: Path, announce: str) -> tuple[Path, Path, bytes]:
    payload = tmp_path / "seed" / "payload.bin"
    payload.parent.mkdir()
    payload.write_bytes(os.urandom(300_000))
    torrent = metainfo.create(str(payload), announce)
    path = tmp_path / "payload.torrent"
    path.write_bytes(bencodepy.encode(torrent))
    return payload, path, metainfo.info_hash(torrent[b"info"])


@pytest.mark.interop
class InteropTests:
    """Standard clients announce to our tracker."""

    @pytest.mark.skipif(shutil.which("aria2c") is None, reason="aria2c not installed")
    def test_aria2c_seeder_visible(self, tmp_path):
        """An aria2c seeder shows up as a seeder in scrape and status.json."""
        port = free_port()
        server = twistd_tracker(tmp_path, port, "--allowed-dir", str(tmp_path))
        payload, torrent, ih = _payload_torrent(tmp_path, f"http://127.0.0.1:{port}/announce")
        aria = None
        try:
            # The allow-list is rescanned every 30 s: restart to pick the torrent at once.
            server.stop()
            server = twistd_tracker(tmp_path, port, "--allowed-dir", str(tmp_path))
            aria = subprocess.Popen(
                ["aria2c", "--seed-time=60", "--bt-seed-unverified=true", "--check-integrity=false",
                 f"--listen-port={free_port()}", "--enable-dht=false", "--bt-enable-lpd=false",
                 "--enable-peer-exchange=false", "--summary-interval=0", "--console-log-level=warn",
                 "-d", str(payload.parent), str(torrent)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path)
            files = wait_for(lambda: server.scrape().get(ih, {}).get(b"complete"), 20,
                             "aria2c to announce")
            assert files == 1
            (entry,) = server.status()["torrents"]
            assert entry["name"] == "payload.bin" and entry["size"] == 300_000
            assert entry["peers"][0]["progress"] == 1.0
        finally:
            if aria is not None:
                stop(aria, signal.SIGKILL)
            server.stop()

    def test_libtorrent_announce(self, tmp_path):
        """A libtorrent leecher announces and is counted as incomplete."""
        lt = pytest.importorskip("libtorrent")
        port = free_port()
        server = twistd_tracker(tmp_path, port)
        _, torrent, ih = _payload_torrent(tmp_path, f"http://127.0.0.1:{port}/announce")
        listen = free_port()
        session = lt.session({"listen_interfaces": f"127.0.0.1:{listen}", "enable_dht": False,
                              "enable_lsd": False, "enable_upnp": False, "enable_natpmp": False})
        try:
            params = lt.add_torrent_params()
            params.ti = lt.torrent_info(str(torrent))
            params.save_path = str(tmp_path / "leech")
            session.add_torrent(params)
            incomplete = wait_for(lambda: server.scrape().get(ih, {}).get(b"incomplete"), 20,
                                  "libtorrent to announce")
            assert incomplete == 1
            (peer,) = server.status()["torrents"][0]["peers"]
            assert peer["port"] == listen and peer["left"] == 300_000
        finally:
            del session
            server.stop()
