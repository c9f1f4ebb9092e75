"""The tracker over TLS with real processes: HTTPS announces, client certificates, auth.

A test CA, a server certificate (SAN IP:127.0.0.1 and DNS:localhost) and a
client certificate are made here with ``cryptography`` (EC P-256: fast).
Every process runs on a free loopback port and is killed by its PID.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import json
import os
import re
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote_from_bytes

import bencodepy
import pytest
from harness import wait_for
from conftest import free_port, stop_process, venv_bin
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from murder import metainfo
from murder.auth import token

pytestmark = pytest.mark.integration

SECRET = b"tls-test-secret-0123456789abcdef"
PEER_ID = b"-TT0001-000000000001"


# ------------------------------------------------------------------ certificates


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


@dataclass
class Issued:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate


def _issue(subject: str, issuer: Issued | None, *, ca: bool = False,
           usage: x509.ObjectIdentifier | None = None) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    signer_key = issuer.key if issuer else key
    builder = (x509.CertificateBuilder().subject_name(_name(subject))
               .issuer_name(issuer.cert.subject if issuer else _name(subject))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                              critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                   signer_key.public_key()), critical=False))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True,
            content_commitment=False, key_encipherment=False, data_encipherment=False,
            key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
    else:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if usage == ExtendedKeyUsageOID.SERVER_AUTH:
        builder = builder.add_extension(x509.SubjectAlternativeName([
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False)
    return Issued(key, builder.sign(signer_key, hashes.SHA256()))


def _write_cert(path: Path, issued: Issued) -> Path:
    path.write_bytes(issued.cert.public_bytes(serialization.Encoding.PEM))
    return path


def _write_key(path: Path, issued: Issued) -> Path:
    path.write_bytes(issued.key.private_bytes(serialization.Encoding.PEM,
                                              serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()))
    os.chmod(path, 0o600)
    return path


@dataclass
class PKI:
    ca: Path
    other_ca: Path
    server_key: Path
    server_cert: Path
    client_key: Path
    client_cert: Path
    foreign_client_key: Path
    foreign_client_cert: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> PKI:
    d = tmp_path_factory.mktemp("pki")
    ca = _issue("murder test CA", None, ca=True)
    other = _issue("some other CA", None, ca=True)
    server = _issue("tracker", ca, usage=ExtendedKeyUsageOID.SERVER_AUTH)
    client = _issue("peer", ca, usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    foreign = _issue("stranger", other, usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    return PKI(ca=_write_cert(d / "ca.pem", ca), other_ca=_write_cert(d / "other.pem", other),
               server_key=_write_key(d / "server.key", server),
               server_cert=_write_cert(d / "server.pem", server),
               client_key=_write_key(d / "client.key", client),
               client_cert=_write_cert(d / "client.pem", client),
               foreign_client_key=_write_key(d / "foreign.key", foreign),
               foreign_client_cert=_write_cert(d / "foreign.pem", foreign))


# ------------------------------------------------------------------- processes


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Procs:
    """Started processes with their logs; every one is killed by PID at the end."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.procs: list[tuple[subprocess.Popen, Path]] = []

    def start(self, name: str, *argv: str) -> subprocess.Popen:
        log = self.logdir / f"{name}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen([venv_bin("murder"), *argv], stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env={**os.environ, "MURDER_TRUST": ""})
        self.procs.append((proc, log))
        return proc

    def output(self, proc: subprocess.Popen) -> str:
        return next(log for p, log in self.procs if p is proc).read_text(errors="replace")

    def wait(self, proc: subprocess.Popen, timeout: float) -> int:
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{proc.args!r} still running after {timeout}s:\n"
                                 + self.output(proc)[-3000:]) from None

    def stop_all(self) -> None:
        for proc, _ in reversed(self.procs):
            stop_process(proc)


@pytest.fixture
def procs(tmp_path):
    p = Procs(tmp_path)
    try:
        yield p
    finally:
        p.stop_all()


def client_context(pki: PKI, cert: bool = True, foreign: bool = False) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca))
    if cert:
        if foreign:
            context.load_cert_chain(str(pki.foreign_client_cert), str(pki.foreign_client_key))
        else:
            context.load_cert_chain(str(pki.client_cert), str(pki.client_key))
    return context


def https_get(port: int, target: str, context: ssl.SSLContext, timeout: float = 5.0) -> bytes:
    """One GET over TLS with the standard library; returns the body."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            tls.sendall(f"GET {target} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode())
            data = b""
            while chunk := tls.recv(65536):
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200"), head
    return body


def start_tracker(procs: Procs, tmp_path: Path, pki: PKI, *extra: str,
                  ready: ssl.SSLContext | None = None) -> int:
    """``murder tracker`` on an ssl: endpoint; returns its port once it answers."""
    port = free_port()
    proc = procs.start("tracker", "tracker", "--dfile", "",
                       "--listen", f"ssl:{port}:interface=127.0.0.1:"
                                   f"privateKey={pki.server_key}:certKey={pki.server_cert}",
                       *extra)
    context = ready or client_context(pki, cert=False)

    def answers() -> bool:
        assert proc.poll() is None, procs.output(proc)
        https_get(port, "/status.json", context)  # OSError: not yet
        return True

    wait_for(answers, 20, "the HTTPS tracker to answer")
    return port


def make_payload_torrent(tmp_path: Path, announce: str, *extra: str) -> tuple[Path, Path]:
    payload = tmp_path / "payload.bin"
    payload.write_bytes(os.urandom(3 * 2**18 + 1234))
    torrent = tmp_path / "payload.torrent"
    rc = subprocess.run([venv_bin("murder"), "make-torrent", "-q", "--announce", announce,
                         "-o", str(torrent), *extra, str(payload)],
                        capture_output=True, timeout=60)
    assert rc.returncode == 0, rc.stderr
    return payload, torrent


# ----------------------------------------------------------------------- tests


class HTTPSTrackerTests:
    """Peers announce over HTTPS, verifying the tracker against --ca."""

    def test_peer_with_ca_completes_and_without_fails(self, tmp_path, procs, pki):
        """With --ca the download completes with the right sha256; without --ca, or
        with another CA, the peer exits non-zero within --tracker-timeout, no file left."""
        port = start_tracker(procs, tmp_path, pki)
        payload, torrent = make_payload_torrent(tmp_path,
                                                f"https://127.0.0.1:{port}/announce")
        procs.start("seed", "seed", "--torrent", str(torrent), "--file", str(payload),
                    "--bind", "127.0.0.1", "--ca", str(pki.ca), "-q")
        out = tmp_path / "out"
        out.mkdir()
        peer = procs.start("peer", "peer", "--torrent", str(torrent), "--destination",
                           str(out), "--bind", "127.0.0.1", "--ca", str(pki.ca),
                           "--seed-time", "0", "--tracker-timeout", "20", "-q")
        assert procs.wait(peer, 60) == 0, procs.output(peer)
        assert sha256(out / "payload.bin") == sha256(payload)

        for name, ca in (("no-ca", None), ("other-ca", pki.other_ca)):
            dest = tmp_path / name
            dest.mkdir()
            started = time.monotonic()
            args = ["peer", "--torrent", str(torrent), "--destination", str(dest),
                    "--bind", "127.0.0.1", "--seed-time", "0", "--tracker-timeout", "3", "-q"]
            if ca is not None:
                args += ["--ca", str(ca)]
            bad = procs.start(name, *args)
            code = procs.wait(bad, 30)
            text = procs.output(bad)
            assert code != 0, text
            assert time.monotonic() - started < 20
            assert re.search(r"no tracker answered within 3(\.\d)?s", text), text
            assert "TLS error: certificate verify failed" in text, text
            assert list(dest.iterdir()) == [], list(dest.iterdir())


class ClientCertificateTests:
    """With --client-ca, only clients holding a certificate from that CA get in."""

    def test_client_certificate_required(self, tmp_path, procs, pki):
        """No certificate or a foreign one: handshake refused; the CA's client: served."""
        port = start_tracker(procs, tmp_path, pki, "--client-ca", str(pki.ca),
                             ready=client_context(pki))
        info_hash = quote_from_bytes(b"\x11" * 20, safe="")
        target = (f"/announce?info_hash={info_hash}"
                  f"&peer_id={PEER_ID.decode()}&port=7001&left=0&compact=1")
        reply = bencodepy.decode(https_get(port, target, client_context(pki)))
        assert b"failure reason" not in reply and reply[b"complete"] == 1
        for context in (client_context(pki, cert=False),
                        client_context(pki, foreign=True)):
            with pytest.raises((ssl.SSLError, ConnectionError)):
                https_get(port, "/status.json", context)


class PeerClientCertificateTests:
    """Our peers can announce to a tracker that demands client certificates."""

    def test_peer_with_client_certificate_completes(self, tmp_path, procs, pki):
        """--client-cert/--client-key from the tracker's client CA: the download completes;
        the same peer without them fails with a non-zero exit and leaves no file."""
        port = start_tracker(procs, tmp_path, pki, "--client-ca", str(pki.ca),
                             ready=client_context(pki))
        announce = f"https://127.0.0.1:{port}/announce"
        payload = tmp_path / "seed" / "release.bin"
        payload.parent.mkdir()
        payload.write_bytes(os.urandom(600_000))
        torrent = tmp_path / "release.torrent"
        metainfo.write_atomic(str(torrent), bencodepy.encode(metainfo.create(str(payload),
                                                                             announce)))
        tls = ["--ca", str(pki.ca), "--client-cert", str(pki.client_cert),
               "--client-key", str(pki.client_key)]
        procs.start("seeder", "seed", "--torrent", str(torrent), "--file", str(payload),
                    "--ip", "127.0.0.1", "--bind", "127.0.0.1", *tls)
        good, bad = tmp_path / "good", tmp_path / "bad"
        good.mkdir()
        bad.mkdir()
        ok = procs.start("peer", "peer", "--torrent", str(torrent), "--destination",
                         str(good), "--ip", "127.0.0.1", "--bind", "127.0.0.1",
                         "--seed-time", "0", "--tracker-timeout", "15", *tls)
        refused = procs.start("peer-without-cert", "peer", "--torrent", str(torrent),
                              "--destination", str(bad), "--ip", "127.0.0.1", "--bind",
                              "127.0.0.1", "--seed-time", "0", "--tracker-timeout", "3",
                              "--ca", str(pki.ca))
        assert ok.wait(60) == 0, procs.output(ok)
        assert sha256(good / "release.bin") == sha256(payload)
        assert refused.wait(60) != 0
        assert os.listdir(bad) == []


class SignedAuthorisedDeployTests:
    """A signed torrent with an auth token, over HTTPS, with --trust: the whole chain."""

    def test_signed_authorised_https_deploy(self, tmp_path, procs, pki):
        """Peer with --trust and --ca completes; a token-less torrent is refused by
        the tracker with its failure reason, and that peer exits non-zero."""
        secret = tmp_path / "auth.secret"
        secret.write_bytes(SECRET + b"\n")
        keys = subprocess.run([venv_bin("murder"), "keygen", "--out", str(tmp_path / "rel")],
                              capture_output=True, timeout=30)
        assert keys.returncode == 0, keys.stderr
        port = start_tracker(procs, tmp_path, pki, "--auth-secret", str(secret))
        announce = f"https://127.0.0.1:{port}/announce"
        payload, torrent = make_payload_torrent(
            tmp_path, announce, "--auth-secret", str(secret), "--sign", str(tmp_path / "rel"))
        meta = metainfo.load(str(torrent))
        assert meta.announce == f"{announce}?auth={token(SECRET, meta.info_hash)}"
        trust = ["--trust", str(tmp_path / "rel.pub"), "--ca", str(pki.ca)]
        procs.start("seed", "seed", "--torrent", str(torrent), "--file", str(payload),
                    "--bind", "127.0.0.1", "-q", *trust)
        out = tmp_path / "out"
        out.mkdir()
        peer = procs.start("peer", "peer", "--torrent", str(torrent), "--destination",
                           str(out), "--bind", "127.0.0.1", "--seed-time", "0",
                           "--tracker-timeout", "20", "-q", *trust)
        assert procs.wait(peer, 60) == 0, procs.output(peer)
        assert sha256(out / "payload.bin") == sha256(payload)

        # The same payload without a token: same swarm, but the tracker refuses it.
        bare = tmp_path / "bare.torrent"
        made = subprocess.run([venv_bin("murder"), "make-torrent", "-q", "--announce",
                               announce, "-o", str(bare), str(payload)],
                              capture_output=True, timeout=60)
        assert made.returncode == 0, made.stderr
        dest = tmp_path / "bare-out"
        dest.mkdir()
        refused = procs.start("bare-peer", "peer", "--torrent", str(bare), "--destination",
                              str(dest), "--bind", "127.0.0.1", "--seed-time", "0",
                              "--tracker-timeout", "3", "-q", "--ca", str(pki.ca))
        assert procs.wait(refused, 30) != 0
        assert "not authorised: auth token missing" in procs.output(refused)
        assert list(dest.iterdir()) == []
        status = https_get(port, "/status.json", client_context(pki, cert=False))
        assert json.loads(status)["totals"]["rejected_auth"] >= 1
