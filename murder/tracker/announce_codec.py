"""Announce and scrape queries: parse, validate, build replies.  Pure code.

Covers BEP 3 (announce), BEP 7 (``peers6``), BEP 23 (compact peers) and
BEP 48 (scrape).  :func:`parse_query` splits a raw query string into
``{name: [values]}`` with bytes keys and values; every malformed value raises
:class:`~murder.errors.AnnounceError` whose reason goes back to the client as
``failure reason``.  Nothing here does I/O or reads the clock.

The compact announce reply is the tracker's hot path, so it is formatted
directly; :func:`bencodepy.encode` produces the very same bytes (the tests
check this) but costs several times more per request.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence
from urllib.parse import unquote_to_bytes

from murder import bencode, compact
from murder.errors import AnnounceError

Args = Mapping[bytes, Sequence[bytes]]

#: Loopback and private ranges (plus the 198.18/15 benchmark range that the
#: network-namespace tests use): requests from here may set ``ip=``.
DEFAULT_TRUSTED_NETWORKS: tuple[str, ...] = (
    "127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "198.18.0.0/15",
    "::1/128", "fc00::/7",
)

#: Announce counters are 64-bit in every client; more digits is garbage.
_MAX_DIGITS = 20
_MAX_NUMBER = 2**63 - 1
#: ``key`` and ``trackerid`` are opaque, but a tracker need not store megabytes.
_MAX_OPAQUE = 64

EVENTS = {b"": "", b"empty": "", b"started": "started", b"completed": "completed",
          b"stopped": "stopped"}


@dataclass(frozen=True, slots=True)
class AnnounceRequest:
    """One validated announce.  ``ip`` is the address other peers will get."""

    info_hash: bytes
    peer_id: bytes
    ip: str
    port: int
    uploaded: int
    downloaded: int
    left: int
    event: str
    compact: bool
    no_peer_id: bool
    numwant: int
    key: bytes | None = None
    trackerid: bytes | None = None


class TrustedNetworks:
    """The networks whose requests may override their address with ``ip=``.

    Answers are memoised per remote host (bounded), because the same few
    thousand datacenter hosts announce every few seconds.
    """

    _CACHE_SIZE = 4096

    def __init__(self, networks: Iterable[str] = DEFAULT_TRUSTED_NETWORKS) -> None:
        self.networks = tuple(ipaddress.ip_network(n, strict=False) for n in networks)
        self._cache: dict[str, bool] = {}

    def __contains__(self, host: str) -> bool:
        known = self._cache.get(host)
        if known is not None:
            return known
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            answer = False
        else:
            answer = any(address.version == n.version and address in n for n in self.networks)
        if len(self._cache) >= self._CACHE_SIZE:
            self._cache.clear()
        self._cache[host] = answer
        return answer


def _unescape(raw: bytes) -> bytes:
    """``urllib.parse.unquote_to_bytes(raw.replace(b"+", b" "))``, faster on announces.

    Info hashes arrive fully escaped (``%12%34…``) and most peer ids as a
    printable prefix then escapes (``-XX0001-%12…``); for those one
    :meth:`bytes.fromhex` replaces a Python loop over every escape.  Anything
    else, or anything odd (``%`` without two hex digits), takes the generic
    path, so the result is always exactly the generic one.
    """
    if b"+" in raw:
        raw = raw.replace(b"+", b" ")
    start = raw.find(b"%")
    if start < 0:
        return raw
    tail = raw[start:]
    count = len(tail) // 3
    if len(tail) == 3 * count and tail.count(b"%") == count and tail[::3].count(b"%") == count:
        digits = tail.replace(b"%", b"")
        if digits.isalnum():  # ASCII only; fromhex also skips whitespace, which must not pass
            try:
                return raw[:start] + bytes.fromhex(digits.decode("ascii"))
            except ValueError:
                pass
    return unquote_to_bytes(raw)


def parse_query(qs: bytes) -> dict[bytes, list[bytes]]:
    """Split a query string exactly as ``twisted.web.http.parse_qs(qs, 1)`` does.

    Pairs are separated by ``&`` or ``;``, items without ``=`` are dropped,
    blank values are kept, ``+`` means space and ``%XX`` escapes are decoded.
    Only items holding ``%`` or ``+`` are unescaped (most announce fields are
    plain digits or words), and escaped ones mostly by :func:`_unescape`'s
    shortcut: generic unescaping was a visible share of each announce's time.
    """
    args: dict[bytes, list[bytes]] = {}
    if b";" in qs:
        qs = qs.replace(b";", b"&")
    for item in qs.split(b"&"):
        key, sep, value = item.partition(b"=")
        if not sep:
            continue
        if b"%" in key or b"+" in key:
            key = _unescape(key)
        if b"%" in value or b"+" in value:
            value = _unescape(value)
        values = args.get(key)
        if values is None:
            args[key] = [value]
        else:
            values.append(value)
    return args


def normalize_host(host: str) -> str:
    """``::ffff:10.0.0.1`` (a v4 client on a dual-stack socket) → ``10.0.0.1``."""
    if host.startswith("::ffff:") and "." in host:
        return host[7:]
    return host


def _one(args: Args, name: bytes, required: bool = True) -> bytes | None:
    values = args.get(name)
    if not values:
        if required:
            raise AnnounceError(f"missing {name.decode()}")
        return None
    if len(values) != 1:
        raise AnnounceError(f"{name.decode()} given more than once")
    return values[0]


def _number(args: Args, name: bytes, default: int | None = None) -> int:
    raw = _one(args, name, required=default is None)
    if raw is None:
        return default  # type: ignore[return-value]
    if raw.isdigit() and len(raw) <= _MAX_DIGITS:
        value = int(raw)
        if value <= _MAX_NUMBER:
            return value
    raise AnnounceError(f"invalid {name.decode()}: not a non-negative integer")


def _hash20(raw: bytes | None, name: str) -> bytes:
    if raw is None or len(raw) != 20:
        raise AnnounceError(f"invalid {name}: must be 20 bytes")
    return raw


def _opaque(args: Args, name: bytes) -> bytes | None:
    raw = _one(args, name, required=False)
    if raw is not None and len(raw) > _MAX_OPAQUE:
        raise AnnounceError(f"invalid {name.decode()}: longer than {_MAX_OPAQUE} bytes")
    return raw


def _flag(args: Args, name: bytes) -> bool:
    raw = _one(args, name, required=False)
    return raw is not None and raw not in (b"0", b"")


def parse_announce(args: Args, remote: str, trusted: TrustedNetworks, *,
                   numwant_default: int, numwant_max: int) -> AnnounceRequest:
    """Validate an announce query coming from address ``remote``.

    ``ip=`` is honoured only when ``remote`` is in ``trusted`` and must then be
    an IP literal (no DNS lookups on the request path).  ``numwant`` is capped
    at ``numwant_max``; a negative one (some clients send ``-1``) means default.
    """
    info_hash = _hash20(_one(args, b"info_hash"), "info_hash")
    peer_id = _hash20(_one(args, b"peer_id"), "peer_id")
    port = _number(args, b"port")
    if not 0 < port < 65536:
        raise AnnounceError("invalid port: must be 1-65535")
    uploaded = _number(args, b"uploaded", 0)
    downloaded = _number(args, b"downloaded", 0)
    left = _number(args, b"left")
    raw_event = _one(args, b"event", required=False) or b""
    event = EVENTS.get(raw_event)
    if event is None:
        raise AnnounceError("invalid event: must be started, completed or stopped")
    raw_numwant = _one(args, b"numwant", required=False)
    if raw_numwant is None:
        numwant = numwant_default
    elif raw_numwant[:1] == b"-" and raw_numwant[1:].isdigit() and len(raw_numwant) <= _MAX_DIGITS:
        numwant = numwant_default
    elif raw_numwant.isdigit() and len(raw_numwant) <= _MAX_DIGITS:
        numwant = int(raw_numwant)
    else:
        raise AnnounceError("invalid numwant: not an integer")
    numwant = min(numwant, numwant_max)
    ip = normalize_host(remote)
    raw_ip = _one(args, b"ip", required=False)
    if raw_ip is not None and remote in trusted:
        try:
            ip = str(ipaddress.ip_address(raw_ip.decode("ascii")))
        except (UnicodeDecodeError, ValueError):
            raise AnnounceError("invalid ip: must be an IPv4 or IPv6 address") from None
        ip = normalize_host(ip)
    return AnnounceRequest(
        info_hash=info_hash, peer_id=peer_id, ip=ip, port=port, uploaded=uploaded,
        downloaded=downloaded, left=left, event=event, compact=_flag(args, b"compact"),
        no_peer_id=_flag(args, b"no_peer_id"), numwant=numwant,
        key=_opaque(args, b"key"), trackerid=_opaque(args, b"trackerid"),
    )


def parse_scrape(args: Args, max_hashes: int = 1000) -> list[bytes] | None:
    """Info hashes of a scrape (BEP 48); ``None`` asks for every torrent."""
    values = args.get(b"info_hash")
    if not values:
        return None
    if len(values) > max_hashes:
        raise AnnounceError(f"too many info_hash values (at most {max_hashes})")
    return [_hash20(v, "info_hash") for v in values]


#: BEP 23/7 compact form of one peer (see :mod:`murder.compact`).
compact_address = compact.encode


def compact_reply(*, complete: int, incomplete: int, interval: int, min_interval: int,
                  peers: bytes, peers6: bytes = b"", tracker_id: bytes | None = None,
                  near: list[bytes] | None = None) -> bytes:
    """Bencoded compact announce reply; ``peers6`` only when there are IPv6 peers.

    ``near`` (``--topology`` only): the requester's rack's networks as CIDR
    strings, a murder extension that other clients ignore; absent when None.
    Keys are written in bencode's sorted order, so this equals
    ``bencodepy.encode`` of the same dict.
    """
    parts = [b"d8:completei%de10:incompletei%de8:intervali%de12:min intervali%de"
             % (complete, incomplete, interval, min_interval)]
    if near is not None:
        parts.append(b"4:nearl" + b"".join(b"%d:%s" % (len(n), n) for n in near) + b"e")
    parts += [b"5:peers%d:" % len(peers), peers]
    if peers6:
        parts.append(b"6:peers6%d:" % len(peers6))
        parts.append(peers6)
    if tracker_id is not None:
        parts.append(b"10:tracker id%d:" % len(tracker_id))
        parts.append(tracker_id)
    parts.append(b"e")
    return b"".join(parts)


def dict_reply(*, complete: int, incomplete: int, interval: int, min_interval: int,
               peers: list[tuple[bytes, str, int]], no_peer_id: bool,
               tracker_id: bytes | None = None, near: list[bytes] | None = None) -> bytes:
    """Bencoded original-style reply: ``peers`` is a list of dicts (BEP 3).

    ``peers`` holds ``(peer_id, ip, port)``; ``no_peer_id`` leaves the ids out.
    """
    if no_peer_id:
        listed = [{b"ip": ip.encode(), b"port": port} for _, ip, port in peers]
    else:
        listed = [{b"ip": ip.encode(), b"peer id": pid, b"port": port} for pid, ip, port in peers]
    reply: dict[bytes, object] = {
        b"complete": complete, b"incomplete": incomplete, b"interval": interval,
        b"min interval": min_interval, b"peers": listed,
    }
    if tracker_id is not None:
        reply[b"tracker id"] = tracker_id
    if near is not None:
        reply[b"near"] = near
    return bencode.encode(reply)


def scrape_reply(files: Mapping[bytes, tuple[int, int, int]]) -> bytes:
    """BEP 48 reply from ``{info_hash: (complete, incomplete, downloaded)}``."""
    return bencode.encode({b"files": {
        ih: {b"complete": c, b"downloaded": d, b"incomplete": i}
        for ih, (c, i, d) in files.items()
    }})


def failure_reply(reason: str) -> bytes:
    """Bencoded ``failure reason`` (the only key, as BEP 3 requires)."""
    return bencode.encode({b"failure reason": reason.encode("utf-8", "replace")})
