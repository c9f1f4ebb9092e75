"""Announce authorisation: per-swarm tokens derived from one shared secret.

Why derived tokens rather than one password or a directory of per-swarm
secrets: the tracker and the release engineer share a single secret file,
yet every swarm gets its own token

    token = hex(HMAC-SHA256(secret, DOMAIN || info_hash))[:32]   (128 bits)

so a torrent that leaks (it sits on every host of a deploy) authorises its
own swarm only, never another release, and the tracker needs no state per
torrent.  ``murder make-torrent --auth-secret FILE`` writes the token into
the announce URL(s) as ``?auth=<token>``; BitTorrent clients (ours, aria2,
libtorrent, Transmission) keep a tracker URL's query and append their own
parameters with ``&``, so every announce and scrape carries it.

Several secrets may be configured on the tracker (``--auth-secret`` is
repeatable): a token made with any of them is accepted, which lets a secret
be rotated without a flag day.  Comparison is :func:`hmac.compare_digest`.
Only the standard library's ``hmac``/``hashlib``; nothing here does I/O
except :func:`load_secret`, and nothing reads the clock.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from typing import Iterable, Sequence
from urllib.parse import urlsplit, urlunsplit

from murder.errors import ConfigError

#: Query parameter carrying the token.
AUTH_PARAM = "auth"
#: Domain separation: the secret may be reused for nothing else by accident.
DOMAIN = b"murder announce auth v1\x00"
#: Hex digits of a token (128 bits of the HMAC).
TOKEN_HEX = 32
#: A shorter secret is refused: it could be guessed offline from one token.
MIN_SECRET = 16
_MAX_SECRET_FILE = 4096
#: A scrape may name many swarms, each with its own token.
MAX_TOKENS = 100

_AUTH_RE = re.compile(rb"(?i)(^|[?&;])(auth=)[^&;#\s]*")


def load_secret(path: str) -> bytes:
    """The secret in ``path``: its bytes without surrounding whitespace.

    Any content works (``openssl rand -hex 32 > FILE`` is the suggested way);
    the trailing newline an editor adds is ignored so that the tracker and
    make-torrent agree whatever wrote the file.
    """
    try:
        with open(path, "rb") as f:
            data = f.read(_MAX_SECRET_FILE + 1)
    except OSError as e:
        raise ConfigError(f"cannot read auth secret {path}: {e.strerror or e}") from None
    if len(data) > _MAX_SECRET_FILE:
        raise ConfigError(f"auth secret {path} is larger than {_MAX_SECRET_FILE} bytes")
    secret = data.strip()
    if len(secret) < MIN_SECRET:
        raise ConfigError(f"auth secret {path} is too short ({len(secret)} bytes, "
                          f"at least {MIN_SECRET}; try `openssl rand -hex 32 > {path}`)")
    return secret


def token(secret: bytes, info_hash: bytes) -> str:
    """The announce token of the swarm ``info_hash`` under ``secret`` (lower-case hex)."""
    if len(info_hash) != 20:
        raise ValueError(f"info hash must be 20 bytes, not {len(info_hash)}")
    return hmac.new(secret, DOMAIN + info_hash, hashlib.sha256).hexdigest()[:TOKEN_HEX]


def url_with_token(url: str, value: str) -> str:
    """``url`` with ``auth=value`` in its query, replacing any ``auth=`` already there.

    Other query parameters and their order are kept; a fragment is dropped
    (clients would not send it anyway).
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ConfigError(f"announce authorisation needs an http(s) tracker URL, not {url!r}")
    kept = [p for p in parts.query.split("&")
            if p and p.split("=", 1)[0].lower() != AUTH_PARAM]
    kept.append(f"{AUTH_PARAM}={value}")
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "&".join(kept), ""))


def redact(target: bytes) -> bytes:
    """``target`` with every ``auth=`` value replaced, for log lines."""
    if b"auth=" not in target.lower():
        return target
    return _AUTH_RE.sub(rb"\1\2<redacted>", target)


class Authoriser:
    """Decides whether a request carries a valid token for each swarm it names."""

    def __init__(self, secrets: Sequence[bytes]) -> None:
        if not secrets:
            raise ValueError("Authoriser needs at least one secret")
        self.secrets = tuple(secrets)
        #: Requests refused for a missing or wrong token since start.
        self.rejected = 0

    @classmethod
    def from_files(cls, paths: Iterable[str]) -> Authoriser:
        return cls([load_secret(os.fspath(p)) for p in paths])

    def _valid(self, info_hash: bytes, given: Sequence[bytes]) -> bool:
        # Every (secret, token) pair is compared, matched or not, so the time
        # taken says nothing about which comparison matched.
        ok = False
        for secret in self.secrets:
            expected = token(secret, info_hash).encode("ascii")
            for candidate in given:
                ok |= hmac.compare_digest(expected, candidate.lower())
        return ok

    def check(self, info_hashes: Sequence[bytes], given: Sequence[bytes]) -> str | None:
        """``None`` when every swarm in ``info_hashes`` has a valid token among
        ``given`` (the raw ``auth`` values), else the refusal reason.

        Counts each refusal in :attr:`rejected`.
        """
        reason = self._reason(info_hashes, given)
        if reason is not None:
            self.rejected += 1
        return reason

    def _reason(self, info_hashes: Sequence[bytes], given: Sequence[bytes]) -> str | None:
        if not given:
            return "not authorised: auth token missing (make the torrent with --auth-secret)"
        if len(given) > MAX_TOKENS:
            return f"not authorised: more than {MAX_TOKENS} auth tokens"
        if not info_hashes:
            return "not authorised: a full scrape is not allowed on this tracker"
        for info_hash in info_hashes:
            if not self._valid(info_hash, given):
                return "not authorised: invalid auth token for this torrent"
        return None
