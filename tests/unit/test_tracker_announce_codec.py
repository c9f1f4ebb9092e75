"""Unit tests for murder.tracker.announce_codec: query parsing and exact reply bytes."""

from __future__ import annotations

import random
from urllib.parse import quote_from_bytes

import bencodepy
import pytest
from hypothesis import event, given, settings, strategies as st
from twisted.web.http import parse_qs

from murder.errors import AnnounceError
from murder.tracker import announce_codec as codec
from murder.tracker.announce_codec import TrustedNetworks

IH = b"\x01" * 20
PID = b"-MU0100-abcdefghijkl"


def _args(**overrides: bytes | None) -> dict[bytes, list[bytes]]:
    base: dict[str, bytes | None] = {
        "info_hash": IH, "peer_id": PID, "port": b"6881", "uploaded": b"0",
        "downloaded": b"0", "left": b"1000",
    }
    base.update(overrides)
    return {k.encode(): [v] for k, v in base.items() if v is not None}


def _parse(args, remote="10.0.0.5", trusted=None, default=50, cap=500):
    return codec.parse_announce(args, remote, trusted or TrustedNetworks(),
                                numwant_default=default, numwant_max=cap)


class ParseAnnounceTests:
    """parse_announce validates BEP 3 queries and refuses malformed ones."""

    def test_minimal(self):
        """A minimal announce yields its fields and the remote address."""
        req = _parse(_args())
        assert (req.info_hash, req.peer_id, req.port, req.left) == (IH, PID, 6881, 1000)
        assert req.ip == "10.0.0.5" and req.event == "" and req.numwant == 50
        assert not req.compact and not req.no_peer_id

    def test_flags_and_events(self):
        """compact, no_peer_id, key, trackerid and every event are read."""
        req = _parse(_args(compact=b"1", no_peer_id=b"1", event=b"completed", key=b"k1",
                           trackerid=b"t1"))
        assert req.compact and req.no_peer_id and req.event == "completed"
        assert (req.key, req.trackerid) == (b"k1", b"t1")
        assert _parse(_args(event=b"empty")).event == ""
        assert _parse(_args(compact=b"0")).compact is False

    def test_numwant(self):
        """numwant is capped; absent or negative means the default."""
        assert _parse(_args(numwant=b"10")).numwant == 10
        assert _parse(_args(numwant=b"100000")).numwant == 500
        assert _parse(_args(numwant=b"-1")).numwant == 50
        assert _parse(_args(), default=900, cap=500).numwant == 500

    @pytest.mark.parametrize("overrides, reason", [
        ({"info_hash": None}, "missing info_hash"),
        ({"info_hash": b"short"}, "invalid info_hash: must be 20 bytes"),
        ({"info_hash": b"x" * 21}, "invalid info_hash: must be 20 bytes"),
        ({"peer_id": None}, "missing peer_id"),
        ({"peer_id": b"x" * 19}, "invalid peer_id: must be 20 bytes"),
        ({"port": None}, "missing port"),
        ({"port": b"0"}, "invalid port: must be 1-65535"),
        ({"port": b"65536"}, "invalid port: must be 1-65535"),
        ({"port": b"-1"}, "invalid port: not a non-negative integer"),
        ({"port": b"80a"}, "invalid port: not a non-negative integer"),
        ({"left": None}, "missing left"),
        ({"left": b"1e9"}, "invalid left: not a non-negative integer"),
        ({"uploaded": b"9" * 30}, "invalid uploaded: not a non-negative integer"),
        ({"downloaded": b"\xd9\xa3"}, "invalid downloaded: not a non-negative integer"),
        ({"event": b"paused"}, "invalid event: must be started, completed or stopped"),
        ({"numwant": b"many"}, "invalid numwant: not an integer"),
        ({"key": b"k" * 65}, "invalid key: longer than 64 bytes"),
    ])
    def test_refused(self, overrides, reason):
        """Each malformed field is refused with its own reason."""
        with pytest.raises(AnnounceError) as caught:
            _parse(_args(**overrides))
        assert caught.value.reason == reason

    def test_repeated_key_refused(self):
        """A field given twice is ambiguous and refused."""
        args = _args()
        args[b"info_hash"] = [IH, b"\x02" * 20]
        with pytest.raises(AnnounceError, match="info_hash given more than once"):
            _parse(args)

    def test_ip_override_trusted_only(self):
        """ip= is used from trusted networks and ignored from others."""
        assert _parse(_args(ip=b"10.9.9.9"), remote="127.0.0.1").ip == "10.9.9.9"
        assert _parse(_args(ip=b"10.9.9.9"), remote="203.0.113.7").ip == "203.0.113.7"
        assert _parse(_args(ip=b"fd00::1"), remote="192.168.1.1").ip == "fd00::1"
        with pytest.raises(AnnounceError, match="invalid ip"):
            _parse(_args(ip=b"example.com"), remote="127.0.0.1")

    def test_mapped_v4_remote_normalized(self):
        """A v4 client on a dual-stack socket is recorded by its v4 address."""
        assert _parse(_args(), remote="::ffff:10.1.2.3").ip == "10.1.2.3"


#: Characters that make query splitting and unescaping interesting.
_QUERY_ALPHABET = "%+&=;0123456789abcdefABCDEFxyz -_.\x00\xff\t"


def _escaped(raw: bytes, lower: bool) -> bytes:
    """``raw`` fully %-escaped (as clients send info hashes), in either hex case."""
    text = "".join("%%%02x" % b if lower else "%%%02X" % b for b in raw)
    return text.encode()


_value = st.one_of(
    st.binary(max_size=30),
    st.text(_QUERY_ALPHABET, max_size=30).map(lambda t: t.encode("latin-1")),
    st.builds(_escaped, st.binary(max_size=25), st.booleans()),
    st.builds(lambda prefix, raw: prefix + quote_from_bytes(raw).encode(),
              st.sampled_from([b"", b"-XX0001-", b"a+b"]), st.binary(max_size=20)),
    st.builds(lambda a, b: a + b, st.builds(_escaped, st.binary(max_size=8), st.booleans()),
              st.sampled_from([b"%", b"%4", b"%zz", b"% 1", b"%0 ", b"+", b"x", b"%+1"])),
)


class ParseQueryTests:
    """parse_query splits exactly as twisted.web's parse_qs(qs, keep_blank_values=1)."""

    @settings(max_examples=500)
    @given(qs=st.binary(max_size=200))
    def test_arbitrary_bytes(self, qs):
        """Any byte string gives the same dict as parse_qs."""
        assert codec.parse_query(qs) == parse_qs(qs, 1)

    @settings(max_examples=1000)
    @given(items=st.lists(st.tuples(_value, st.sampled_from([b"=", b"", b"=="]), _value),
                          max_size=8),
           separator=st.sampled_from([b"&", b";", b"&&"]))
    def test_query_shaped(self, items, separator):
        """Query-shaped strings (escaped hashes, prefixes, broken escapes) match parse_qs."""
        qs = separator.join(k + eq + v for k, eq, v in items)
        assert codec.parse_query(qs) == parse_qs(qs, 1)

    @pytest.mark.parametrize("value", [
        b"% 0%A ", b"%A%BCD", b"%%41", b"%4%41", b"%0x%41", b"-XX-%41%4", b"%41%42+",
        b"%e9%E9", b"%\xff\xff%41", b"%\t0%41", b"%41%", b"+%41", b"%2B%2b",
    ])
    def test_escape_edge_cases(self, value):
        """Escapes that look almost like a run of %XX take the generic path and agree."""
        qs = b"k" + value + b"=" + value
        assert codec.parse_query(qs) == parse_qs(qs, 1)

    def test_announce_fields(self):
        """A typical announce decodes its escaped hash and id, keeps blanks and repeats."""
        ih = bytes(range(20))
        qs = (b"info_hash=" + _escaped(ih, lower=False) + b"&peer_id=-XX0001-"
              + _escaped(b"\xff" * 12, lower=True) + b"&port=6881&event=&x&key=a+b%21"
              + b";numwant=5&numwant=6")
        assert codec.parse_query(qs) == {
            b"info_hash": [ih], b"peer_id": [b"-XX0001-" + b"\xff" * 12], b"port": [b"6881"],
            b"event": [b""], b"key": [b"a b!"], b"numwant": [b"5", b"6"]}


class TrustedNetworksTests:
    """TrustedNetworks answers membership for the default private ranges."""

    @pytest.mark.parametrize("host, expected", [
        ("127.0.0.1", True), ("10.200.1.1", True), ("172.31.255.1", True),
        ("172.32.0.1", False), ("192.168.0.9", True), ("198.19.1.1", True),
        ("198.20.0.1", False), ("8.8.8.8", False), ("::1", True), ("fd12::5", True),
        ("2001:db8::1", False), ("not-an-ip", False), ("", False),
    ])
    def test_defaults(self, host, expected):
        """Loopback, RFC 1918, 198.18/15 and ULA are trusted; others are not."""
        assert (host in TrustedNetworks()) is expected


class ParseScrapeTests:
    """parse_scrape reads zero, one or many info hashes."""

    def test_all(self):
        """No info_hash asks for every torrent."""
        assert codec.parse_scrape({}) is None

    def test_several(self):
        """Repeated info_hash values are all returned in order."""
        assert codec.parse_scrape({b"info_hash": [IH, b"\x02" * 20]}) == [IH, b"\x02" * 20]

    def test_bad_and_too_many(self):
        """A wrong-length hash or too many hashes is refused."""
        with pytest.raises(AnnounceError, match="20 bytes"):
            codec.parse_scrape({b"info_hash": [b"abc"]})
        with pytest.raises(AnnounceError, match="too many"):
            codec.parse_scrape({b"info_hash": [IH] * 3}, max_hashes=2)


class ReplyTests:
    """Reply builders produce exact bencode."""

    def test_compact_exact(self):
        """The hand-formatted compact reply has the exact expected bytes."""
        peer = codec.compact_address("10.0.0.1", 6881)[0]
        assert peer == b"\x0a\x00\x00\x01\x1a\xe1"
        body = codec.compact_reply(complete=2, incomplete=3, interval=15, min_interval=5,
                                   peers=peer)
        assert body == (b"d8:completei2e10:incompletei3e8:intervali15e"
                        b"12:min intervali5e5:peers6:\x0a\x00\x00\x01\x1a\xe1e")

    @given(c=st.integers(0, 10**6), i=st.integers(0, 10**6), iv=st.integers(1, 3600),
           peers=st.binary(max_size=60), peers6=st.binary(max_size=54),
           tid=st.none() | st.binary(max_size=10))
    def test_compact_equals_bencodepy(self, c, i, iv, peers, peers6, tid):
        """The fast compact formatter equals bencodepy.encode of the same dict."""
        expected = {b"complete": c, b"incomplete": i, b"interval": iv, b"min interval": 5,
                    b"peers": peers}
        if peers6:
            expected[b"peers6"] = peers6
        if tid is not None:
            expected[b"tracker id"] = tid
        assert codec.compact_reply(complete=c, incomplete=i, interval=iv, min_interval=5,
                                   peers=peers, peers6=peers6, tracker_id=tid) \
            == bencodepy.encode(expected)

    def test_compact_v6(self):
        """IPv6 peers are 18 bytes and go in peers6."""
        data, v6 = codec.compact_address("fd00::2", 80)
        assert v6 and data == b"\xfd" + b"\x00" * 14 + b"\x02\x00\x50"

    def test_dict_reply_exact(self):
        """The non-compact reply lists ip/peer id/port dicts, or ip/port with no_peer_id."""
        peers = [(PID, "10.0.0.1", 6881)]
        body = codec.dict_reply(complete=1, incomplete=0, interval=15, min_interval=5,
                                peers=peers, no_peer_id=False)
        assert body == (b"d8:completei1e10:incompletei0e8:intervali15e12:min intervali5e"
                        b"5:peersld2:ip8:10.0.0.17:peer id20:" + PID + b"4:porti6881eeee")
        body = codec.dict_reply(complete=1, incomplete=0, interval=15, min_interval=5,
                                peers=peers, no_peer_id=True)
        assert body.endswith(b"5:peersld2:ip8:10.0.0.14:porti6881eeee")

    def test_scrape_and_failure_exact(self):
        """Scrape and failure replies have the exact BEP 48 / BEP 3 bytes."""
        assert codec.scrape_reply({IH: (1, 2, 3)}) == (
            b"d5:filesd20:" + IH + b"d8:completei1e10:downloadedi3e10:incompletei2eeee")
        assert codec.failure_reply("nope") == b"d14:failure reason4:nopee"


def _generic(qs: bytes, remote: str) -> codec.AnnounceRequest | str:
    try:
        return codec.parse_announce(codec.parse_query(qs), remote, TrustedNetworks(),
                                    numwant_default=50, numwant_max=200)
    except AnnounceError as e:
        return e.reason


#: Per query key: (valid values, broken or unusual ones).
_FIELDS = {
    "info_hash": ([quote_from_bytes(bytes(range(20)), safe=""), "x" * 20, "a%20" + "b" * 17],
                  ["%41" * 19, "%4" + "1" * 19, ""]),
    "peer_id": (["-UT0001-" + "%01" * 12, "p" * 20, "%7E" * 20], ["q" * 21, "%7E" * 19]),
    "port": (["6881", "65535", "1"], ["0", "65536", "00006881", "-1", "68%381", "x", ""]),
    "uploaded": (["0", "123", "9" * 18], ["9" * 21, "9223372036854775808", "1e3", ""]),
    "downloaded": (["0", "7"], [" 1", "%37"]),
    "left": (["0", "1000"], ["%30", "+1", ""]),
    "event": (["started", "completed", "stopped", "", "empty"], ["%73tarted", "paused"]),
    "compact": (["1", "0", "", "yes"], ["%30", "%31"]),
    "no_peer_id": (["1", "0"], ["%30"]),
    "numwant": (["50", "500", "0"], ["-1", "-", "1" * 25, "x", "%35"]),
    "key": (["abc", "%FF%00", ""], ["k" * 65]),
    "ip": (["10.1.2.3", "::1"], ["nope"]),
    "trackerid": (["t1"], []),
    "corrupt": (["0"], []),
    "info%5Fhash": (["x" * 20], []),
}
_REQUIRED = ("info_hash", "peer_id", "port", "left")


@st.composite
def _announce_queries(draw) -> bytes:
    """Announce queries: mostly valid and complete, in any order; sometimes a
    broken value, a missing or repeated key, an unknown key, ';' or an item
    without '='.  (A seeded Random gives the odds; hypothesis's own integer
    draws favour 0, which would make nearly every query odd.)"""
    rnd = random.Random(draw(st.integers(0, 2**32)))
    items = []
    for name, (good, bad) in _FIELDS.items():
        if name in ("ip", "trackerid", "info%5Fhash"):
            if rnd.random() > 0.07:
                continue  # keys the fast path defers on: now and then
        elif rnd.random() < (0.05 if name in _REQUIRED else 0.4):
            continue  # left out (rarely for the required ones)
        broken = bad and rnd.random() < 0.07
        items.append(f"{name}={rnd.choice(bad if broken else good)}")
        if rnd.random() < 0.01:
            items.append(f"{name}={rnd.choice(good)}")
    rnd.shuffle(items)
    if rnd.random() < 0.05:
        items.append(rnd.choice(["junk", "", "a=b=c"]))
    return (";" if rnd.random() < 0.05 else "&").join(items).encode()


class ParseAnnounceFastTests:
    """The announce fast path answers exactly as the generic parser, or defers to it."""

    @settings(max_examples=1500, deadline=None)
    @given(_announce_queries(), st.sampled_from(["10.0.0.7", "::ffff:10.0.0.7", "2001:db8::1"]))
    def test_same_request_or_none(self, qs, remote):
        """Whatever parse_announce_fast returns equals parse_announce(parse_query(...))."""
        fast = codec.parse_announce_fast(qs, remote, numwant_default=50, numwant_max=200)
        if fast is not None:
            assert fast == _generic(qs, remote)
        event("fast" if fast is not None else "generic")

    @pytest.mark.parametrize("qs", [
        # our peer (murder.peer.announcer.build_query), with and without event and key
        "info_hash=%00%01%02%03%04%05%06%07%08%09%0A%0B%0C%0D%0E%0F%10%11%12%13"
        "&peer_id=-MU0001-%01%02%03%04%05%06%07%08%09%0A%0B%0C&port=6881&uploaded=0"
        "&downloaded=0&left=1000&compact=1&numwant=50",
        "info_hash=%00%01%02%03%04%05%06%07%08%09%0A%0B%0C%0D%0E%0F%10%11%12%13"
        "&peer_id=-MU0001-%01%02%03%04%05%06%07%08%09%0A%0B%0C&port=6881&uploaded=5"
        "&downloaded=7&left=0&compact=1&numwant=500&event=completed&key=3f2a",
        # bench/tracker_wrk.lua and libtorrent-style extras
        "info_hash=%F5%B1%65%22%4A%58%B7%91%DF%6A%F1%D8%30%3E%61%CD%C4%BB%86%C3"
        "&peer_id=-WK0001-%D1%C4%27%10%3C%34%4C%41%89%EB%2F%1E&port=6001&uploaded=0"
        "&downloaded=0&left=1000&compact=1&numwant=50",
        "info_hash=aaaaaaaaaaaaaaaaaaaa&peer_id=-lt0D80-%3F%3Fabcdefghij&port=6881"
        "&uploaded=0&downloaded=0&left=0&corrupt=0&key=AB12&event=started&numwant=200"
        "&compact=1&no_peer_id=1&supportcrypto=1&redundant=0",
    ])
    def test_common_announces_take_it(self, qs):
        """The announces real clients send take the fast path, with the generic result."""
        fast = codec.parse_announce_fast(qs.encode(), "10.0.0.7", numwant_default=50,
                                         numwant_max=200)
        assert fast is not None and fast == _generic(qs.encode(), "10.0.0.7")
