"""Announce authorisation: tokens, make-torrent --auth-secret, the tracker's checks (in memory)."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from urllib.parse import parse_qs, quote_from_bytes, urlsplit

import bencodepy
import pytest
from twisted.logger import globalLogPublisher
from twisted.python import usage

from murder import cli, metainfo, trust
from murder.errors import ConfigError
from murder.peer.announcer import build_query
from murder import auth as auth_module
from murder.auth import Authoriser, load_secret, redact, token, url_with_token
from murder.tracker.tap import Options
from tracker_harness import Tracker

SECRET = b"0123456789abcdef0123456789abcdef"
OTHER = b"fedcba9876543210fedcba9876543210"
IH = bytes(range(20))
IH2 = b"\x42" * 20
ANNOUNCE = "http://127.0.0.1:8998/announce"


def expected_token(secret: bytes, info_hash: bytes) -> str:
    """The documented derivation, written out independently of the module."""
    mac = hmac.new(secret, b"murder announce auth v1\x00" + info_hash, hashlib.sha256)
    return mac.hexdigest()[:32]


def announce_target(info_hash: bytes, n: int = 1, auth: str | None = None,
                    **extra: str) -> str:
    query = (f"info_hash={quote_from_bytes(info_hash, safe='')}&peer_id=-TT0001-{n:012d}"
             f"&port={6000 + n}&left=10&uploaded=0&downloaded=0&compact=1")
    for key, value in extra.items():
        query += f"&{key}={value}"
    if auth is not None:
        query += f"&auth={auth}"
    return "/announce?" + query


def body(tracker: Tracker, target: str) -> dict:
    response = tracker.request(target)
    assert response.status == 200, response
    return bencodepy.decode(response.body)


@pytest.fixture
def captured_log():
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


class TokenTests:
    """Token derivation, URL rewriting, redaction and secret files."""

    def test_token_is_truncated_hmac_sha256(self):
        """token() is the first 32 hex digits of HMAC-SHA256(secret, domain || info hash)."""
        assert token(SECRET, IH) == expected_token(SECRET, IH)
        assert len(token(SECRET, IH)) == 32 and int(token(SECRET, IH), 16) >= 0

    def test_token_differs_per_swarm_and_secret(self):
        """Each swarm and each secret has its own token."""
        assert len({token(SECRET, IH), token(SECRET, IH2), token(OTHER, IH)}) == 3

    def test_token_needs_a_20_byte_hash(self):
        """A truncated info hash is a programming error, not a token."""
        with pytest.raises(ValueError):
            token(SECRET, IH[:19])

    @pytest.mark.parametrize("url, expected", [
        ("http://t:1/announce", "http://t:1/announce?auth=TOK"),
        ("https://t/announce?x=1", "https://t/announce?x=1&auth=TOK"),
        ("http://t/announce?auth=old&x=1", "http://t/announce?x=1&auth=TOK"),
        ("http://t/announce?AUTH=old#frag", "http://t/announce?auth=TOK"),
    ])
    def test_url_with_token(self, url, expected):
        """The token is appended to the query, replacing an old one; other parameters stay."""
        assert url_with_token(url, "TOK") == expected

    def test_url_with_token_refuses_udp(self):
        """A UDP tracker URL cannot carry a query token: refused, not silently unprotected."""
        with pytest.raises(ConfigError, match="http"):
            url_with_token("udp://t:6969/announce", "TOK")

    def test_redact(self):
        """Logged targets keep everything but auth values."""
        assert redact(b"/announce?info_hash=x&auth=abc&port=1") == \
            b"/announce?info_hash=x&auth=<redacted>&port=1"
        assert redact(b"/scrape?AUTH=abc") == b"/scrape?AUTH=<redacted>"
        assert redact(b"/announce?author=1") == b"/announce?author=1"

    def test_load_secret_strips_whitespace(self, tmp_path):
        """A trailing newline does not change the secret."""
        path = tmp_path / "s"
        path.write_bytes(b"  " + SECRET + b"\n")
        assert load_secret(str(path)) == SECRET

    def test_load_secret_refusals(self, tmp_path):
        """Missing and too-short secrets are configuration errors naming the file."""
        with pytest.raises(ConfigError, match="cannot read"):
            load_secret(str(tmp_path / "missing"))
        short = tmp_path / "short"
        short.write_bytes(b"abc\n")
        with pytest.raises(ConfigError, match="too short"):
            load_secret(str(short))


class AuthoriserTests:
    """Authoriser.check counts refusals and compares in constant time."""

    def test_uses_compare_digest(self, monkeypatch):
        """Tokens are compared with hmac.compare_digest (every candidate, every secret)."""
        calls = []
        real = hmac.compare_digest

        def spy(a, b):
            calls.append((a, b))
            return real(a, b)

        monkeypatch.setattr(auth_module.hmac, "compare_digest", spy)
        authoriser = Authoriser([SECRET, OTHER])
        good = token(OTHER, IH).encode()
        assert authoriser.check([IH], [b"wrong", good]) is None
        assert len(calls) == 4 and (token(OTHER, IH).encode(), good) in calls

    def test_counts_refusals_only(self):
        """Accepted checks leave the counter alone; each refusal adds one."""
        authoriser = Authoriser([SECRET])
        assert authoriser.check([IH], [token(SECRET, IH).upper().encode()]) is None
        assert authoriser.check([IH], []) is not None
        assert authoriser.check([IH], [token(SECRET, IH2).encode()]) is not None
        assert authoriser.rejected == 2


def secret_file(tmp_path: Path, secret: bytes = SECRET, name: str = "secret") -> Path:
    path = tmp_path / name
    path.write_bytes(secret + b"\n")
    return path


class MakeTorrentAuthTests:
    """make-torrent --auth-secret writes the swarm's token into every tracker URL."""

    def _make(self, tmp_path, capsys, *extra: str) -> tuple[int, Path]:
        payload = tmp_path / "payload.bin"
        if not payload.exists():
            payload.write_bytes(b"x" * 70000)
        out = tmp_path / "out.torrent"
        rc = cli.main(["make-torrent", "--announce", ANNOUNCE, "-q", "-o", str(out), *extra,
                       str(payload)])
        capsys.readouterr()
        return rc, out

    def test_token_in_announce_and_announce_list(self, tmp_path, capsys):
        """announce and every announce-list URL carry auth=<token of this info hash>."""
        secret = secret_file(tmp_path)
        rc, out = self._make(tmp_path, capsys, "--auth-secret", str(secret),
                             "--announce-list", "http://b:1/announce?x=1,https://c/announce")
        assert rc == 0
        meta = metainfo.load(str(out))
        expected = expected_token(SECRET, meta.info_hash)
        assert meta.announce == f"{ANNOUNCE}?auth={expected}"
        urls = [u for tier in meta.announce_list for u in tier]
        assert urls == [f"{ANNOUNCE}?auth={expected}", f"http://b:1/announce?x=1&auth={expected}",
                        f"https://c/announce?auth={expected}"]

    def test_info_hash_unchanged(self, tmp_path, capsys):
        """The token lives outside info: the info hash equals the one made without it."""
        rc, plain = self._make(tmp_path, capsys)
        plain_hash = metainfo.load(str(plain)).info_hash
        rc2, authed = self._make(tmp_path, capsys, "--auth-secret", str(secret_file(tmp_path)))
        assert rc == rc2 == 0
        assert metainfo.load(str(authed)).info_hash == plain_hash

    def test_signed_and_authorised(self, tmp_path, capsys, monkeypatch):
        """With --sign too, the signature covers the token URL and still verifies."""
        monkeypatch.delenv(trust.TRUST_ENV, raising=False)
        pair = trust.generate_key_pair(str(tmp_path / "k"))
        rc, out = self._make(tmp_path, capsys, "--auth-secret", str(secret_file(tmp_path)),
                             "--sign", pair.private_path)
        assert rc == 0
        meta = metainfo.load(str(out))
        assert "auth=" in meta.announce
        keys = trust.load_public_keys([pair.public_path])
        assert trust.verify_metainfo(meta, keys) == pair.fingerprint

    def test_bad_secret_fails_without_writing(self, tmp_path, capsys):
        """A too-short secret: exit 2 with the reason, no torrent written."""
        short = secret_file(tmp_path, b"short")
        payload = tmp_path / "payload.bin"
        payload.write_bytes(b"y" * 100)
        out = tmp_path / "out.torrent"
        rc = cli.main(["make-torrent", "--announce", ANNOUNCE, "-q", "-o", str(out),
                       "--auth-secret", str(short), str(payload)])
        assert rc == 2
        assert "too short" in capsys.readouterr().err
        assert not out.exists()


def authed_tracker(*secrets: bytes) -> Tracker:
    return Tracker(auth=Authoriser(list(secrets or [SECRET])))


class TrackerAuthTests:
    """The tracker refuses announces and scrapes without the swarm's token."""

    def test_valid_token_accepted(self):
        """An announce with the right token gets peers and is stored."""
        tracker = authed_tracker()
        reply = body(tracker, announce_target(IH, auth=token(SECRET, IH)))
        assert b"failure reason" not in reply and b"interval" in reply
        assert tracker.store.peer_count == 1

    @pytest.mark.parametrize("auth, reason", [
        (None, b"not authorised: auth token missing"),
        ("", b"not authorised: invalid auth token"),
        ("0" * 32, b"not authorised: invalid auth token"),
        ("other-swarm", b"not authorised: invalid auth token"),
    ])
    def test_refused_with_failure_reason(self, auth, reason):
        """Missing, empty, wrong or another swarm's token: HTTP 200 failure reason, no peer."""
        if auth == "other-swarm":
            auth = token(SECRET, IH2)
        tracker = authed_tracker()
        reply = body(tracker, announce_target(IH, auth=auth))
        assert reply[b"failure reason"].startswith(reason)
        assert tracker.store.peer_count == 0 and IH not in tracker.store.torrents

    def test_any_configured_secret(self):
        """With two secrets (rotation), tokens made with either are accepted."""
        tracker = authed_tracker(SECRET, OTHER)
        for n, secret in enumerate((SECRET, OTHER), 1):
            reply = body(tracker, announce_target(IH, n, auth=token(secret, IH)))
            assert b"failure reason" not in reply
        assert tracker.store.peer_count == 2

    def test_no_auth_configured_accepts_all(self):
        """Without --auth-secret nothing changes: no token needed, no counter shown."""
        tracker = Tracker()
        assert b"failure reason" not in body(tracker, announce_target(IH))
        doc = json.loads(tracker.request("/status.json").body)
        assert "rejected_auth" not in doc["totals"]

    def test_refusals_counted_in_status(self):
        """totals.rejected_auth counts every refused announce and scrape."""
        tracker = authed_tracker()
        body(tracker, announce_target(IH))
        body(tracker, announce_target(IH, auth="bad"))
        body(tracker, "/scrape?info_hash=" + quote_from_bytes(IH, safe=""))
        body(tracker, announce_target(IH, auth=token(SECRET, IH)))
        doc = json.loads(tracker.request("/status.json").body)
        assert doc["totals"]["rejected_auth"] == 3
        assert "3 unauthorised requests refused" in tracker.request("/").body.decode()

    def test_status_never_shows_tokens(self):
        """The status pages name swarms but never a token."""
        tracker = authed_tracker()
        good = token(SECRET, IH)
        body(tracker, announce_target(IH, auth=good))
        for path in ("/status.json", "/"):
            page = tracker.request(path).body
            assert IH.hex().encode() in page and good.encode() not in page

    def test_scrape(self):
        """Scrapes need a token per swarm named; a full scrape is refused."""
        tracker = authed_tracker()
        body(tracker, announce_target(IH, auth=token(SECRET, IH)))
        one = "/scrape?info_hash=" + quote_from_bytes(IH, safe="")
        two = one + "&info_hash=" + quote_from_bytes(IH2, safe="")
        ok = body(tracker, f"{one}&auth={token(SECRET, IH)}")
        assert ok[b"files"][IH][b"incomplete"] == 1
        both = body(tracker, f"{two}&auth={token(SECRET, IH)}&auth={token(SECRET, IH2)}")
        assert set(both[b"files"]) == {IH}  # IH2 is authorised but has no peers
        partial = body(tracker, f"{two}&auth={token(SECRET, IH)}")
        assert partial[b"failure reason"].startswith(b"not authorised: invalid")
        assert body(tracker, "/scrape")[b"failure reason"].startswith(b"not authorised")
        full = body(tracker, f"/scrape?auth={token(SECRET, IH)}")
        assert b"full scrape is not allowed" in full[b"failure reason"]

    def test_refusal_logged_with_address_redacted_and_rate_limited(self, captured_log):
        """Each refusal logs the client address without the token; a flood is capped."""
        tracker = authed_tracker()
        secret_looking = token(SECRET, IH2)
        # The token first, so it falls within the logged (truncated) target.
        target = announce_target(IH).replace("?", f"?auth={secret_looking}&", 1)
        for _ in range(50):
            tracker.request(target, client="10.9.8.7")
        lines = [e for e in captured_log if e.get("log_format", "").startswith("rejected")]
        assert 1 <= len(lines) == tracker.app.rejected_log.burst
        assert all(e["peer"] == "10.9.8.7" for e in lines)
        assert all(secret_looking.encode() not in e["uri"] and b"auth=<redacted>" in e["uri"]
                   for e in lines)
        assert tracker.app.auth.rejected == 50

    def test_announce_url_from_make_torrent_through_announcer_query(self, tmp_path, capsys):
        """The URL make-torrent writes plus our announcer's query is accepted end to end."""
        payload = tmp_path / "p.bin"
        payload.write_bytes(b"z" * 5000)
        out = tmp_path / "p.torrent"
        assert cli.main(["make-torrent", "--announce", ANNOUNCE, "-q", "-o", str(out),
                         "--auth-secret", str(secret_file(tmp_path)), str(payload)]) == 0
        capsys.readouterr()
        meta = metainfo.load(str(out))
        url = meta.announce
        query = build_query(meta.info_hash, b"-MU0001-abcdefghijkl", 7000, 0, 0, 5000,
                            "started", None, 50)
        parts = urlsplit(url + "&" + query)
        assert parse_qs(parts.query)["auth"] == [expected_token(SECRET, meta.info_hash)]
        tracker = authed_tracker()
        reply = body(tracker, f"{parts.path}?{parts.query}")
        assert b"failure reason" not in reply
        assert tracker.store.peer_count == 1


class TrackerAuthOptionsTests:
    """--auth-secret and --client-ca are validated at start-up."""

    def test_auth_secret_repeatable(self, tmp_path):
        """Each --auth-secret file lands in the config, in order."""
        a, b = secret_file(tmp_path, SECRET, "a"), secret_file(tmp_path, OTHER, "b")
        options = Options()
        options.parseOptions(["--dfile", "", "--auth-secret", str(a), "--auth-secret", str(b)])
        assert options.config.auth_secrets == (str(a), str(b))

    def test_bad_auth_secret(self, tmp_path):
        """A missing or short secret file is a usage error naming the option."""
        for path in (tmp_path / "missing", secret_file(tmp_path, b"tiny")):
            with pytest.raises(usage.UsageError, match="--auth-secret"):
                Options().parseOptions(["--dfile", "", "--auth-secret", str(path)])

    def test_client_ca_needs_ssl(self, tmp_path):
        """--client-ca with a plain tcp listener is refused (it would protect nothing)."""
        with pytest.raises(usage.UsageError, match="--client-ca: needs an ssl:"):
            Options().parseOptions(["--dfile", "", "--listen", "tcp:0",
                                    "--client-ca", str(tmp_path / "ca.pem")])
