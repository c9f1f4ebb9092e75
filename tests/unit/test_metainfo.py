"""Unit tests for murder.metainfo: creating, loading and validating torrents.

Expected values come from independent computations (hashlib over the payload
bytes, the raw ``info`` slice of the encoded file), never from the code under
test.  Error tests assert the exact message a user sees.
"""

from __future__ import annotations

import hashlib
import os
import signal
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import bencodepy
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from murder import metainfo
from murder.errors import MetainfoError, MurderError, SourceError
from murder.metainfo import FileEntry, Metainfo

ANNOUNCE = "http://tracker.example:8998/announce"


# ------------------------------------------------------------------ helpers


def _sha1_pieces(data: bytes, piece_length: int) -> bytes:
    """The 'pieces' string for ``data``, computed independently of murder."""
    return b"".join(
        hashlib.sha1(data[i:i + piece_length]).digest() for i in range(0, len(data), piece_length)
    )


def _raw_info_slice(encoded: bytes) -> bytes:
    """The info dict's bytes exactly as they appear in a torrent file.

    A minimal bencode span scanner, independent of bencodepy and of murder.
    """

    def skip(i: int) -> int:
        c = encoded[i:i + 1]
        if c == b"i":
            return encoded.index(b"e", i) + 1
        if c in (b"l", b"d"):
            i += 1
            while encoded[i:i + 1] != b"e":
                i = skip(i)
            return i + 1
        colon = encoded.index(b":", i)
        return colon + 1 + int(encoded[i:colon])

    assert encoded[:1] == b"d"
    i = 1
    while encoded[i:i + 1] != b"e":
        key_end = skip(i)
        key = encoded[encoded.index(b":", i) + 1:key_end]
        value_end = skip(key_end)
        if key == b"info":
            return encoded[key_end:value_end]
        i = value_end
    raise AssertionError("no info key")


def _single(data: bytes = b"0123456789" * 4000, piece_length: int = 2**14,
            name: bytes = b"file.bin") -> dict:
    """A valid single-file torrent dict."""
    return {
        b"announce": ANNOUNCE.encode(),
        b"info": {
            b"length": len(data),
            b"name": name,
            b"piece length": piece_length,
            b"pieces": _sha1_pieces(data, piece_length),
        },
    }


def _multi() -> dict:
    """A valid two-file torrent dict: dir/a/one (5 bytes), dir/b (7 bytes)."""
    return {
        b"announce": ANNOUNCE.encode(),
        b"info": {
            b"files": [
                {b"length": 5, b"path": [b"a", b"one"]},
                {b"length": 7, b"path": [b"b"]},
            ],
            b"name": b"dir",
            b"piece length": 2**14,
            b"pieces": _sha1_pieces(b"x" * 12, 2**14),
        },
    }


def _set(*path_and_value: Any) -> Callable[[dict], None]:
    """Mutator: set the value at a key/index path."""
    *path, value = path_and_value

    def apply(t: dict) -> None:
        d: Any = t
        for k in path[:-1]:
            d = d[k]
        d[path[-1]] = value

    return apply


def _del(*path: Any) -> Callable[[dict], None]:
    """Mutator: delete the key at a key path."""

    def apply(t: dict) -> None:
        d: Any = t
        for k in path[:-1]:
            d = d[k]
        del d[path[-1]]

    return apply


def _files(*entries: tuple[list[bytes], int]) -> Callable[[dict], None]:
    """Mutator: replace the file list (and fix 'pieces' so only paths are wrong)."""

    def apply(t: dict) -> None:
        total = sum(length for _, length in entries)
        t[b"info"][b"files"] = [{b"length": n, b"path": p} for p, n in entries]
        t[b"info"][b"pieces"] = _sha1_pieces(b"x" * total, 2**14)

    return apply


def _error(data: bytes) -> MetainfoError:
    with pytest.raises(MetainfoError) as info:
        metainfo.parse(data)
    return info.value


# ------------------------------------------------------------------ creation


class CreateSingleFileTests:
    """create() on one file."""

    def test_fields(self, tmp_payload) -> None:
        """Every Metainfo field reflects the payload and the arguments given."""
        data = os.urandom(2**18 * 2 + 1234)
        path = tmp_payload(data, name="release.tgz")
        t = metainfo.create(str(path), ANNOUNCE, piece_length=2**18,
                            comment="build 42", creation_date=1_700_000_000)
        m = metainfo.parse(bencodepy.encode(t))
        assert m.name == "release.tgz"
        assert m.multi_file is False
        assert m.piece_length == 2**18
        assert b"".join(m.pieces) == _sha1_pieces(data, 2**18)
        assert m.num_pieces == 3
        assert m.files == (FileEntry(("release.tgz",), len(data), 0),)
        assert m.files[0].relpath == "release.tgz"
        assert m.total_length == len(data)
        assert m.announce == ANNOUNCE
        assert m.announce_list == ()
        assert m.private is False
        assert m.comment == "build 42"
        assert m.creation_date == 1_700_000_000
        assert t[b"info"][b"length"] == len(data)
        assert b"files" not in t[b"info"]

    def test_piece_size_of_last_piece(self, tmp_payload) -> None:
        """piece_size() is the piece length except for the short last piece."""
        path = tmp_payload(b"a" * (2**14 * 3 + 100))
        m = metainfo.parse(bencodepy.encode(metainfo.create(str(path), ANNOUNCE, piece_length=2**14)))
        assert [m.piece_size(i) for i in range(m.num_pieces)] == [2**14, 2**14, 2**14, 100]
        assert sum(m.piece_size(i) for i in range(m.num_pieces)) == m.total_length

    def test_piece_size_exact_multiple(self, tmp_payload) -> None:
        """When the payload is a multiple of the piece length the last piece is full."""
        path = tmp_payload(b"a" * (2**14 * 2))
        m = metainfo.parse(bencodepy.encode(metainfo.create(str(path), ANNOUNCE, piece_length=2**14)))
        assert m.num_pieces == 2
        assert m.piece_size(1) == 2**14

    def test_legacy_piece_length(self, tmp_payload) -> None:
        """LEGACY_PIECE_LENGTH is 2**18 and create() uses it when asked."""
        assert metainfo.LEGACY_PIECE_LENGTH == 2**18
        path = tmp_payload(os.urandom(300_000))
        t = metainfo.create(str(path), ANNOUNCE, piece_length=metainfo.LEGACY_PIECE_LENGTH)
        assert t[b"info"][b"piece length"] == 2**18
        assert t[b"info"][b"pieces"] == _sha1_pieces(path.read_bytes(), 2**18)

    def test_auto_piece_length_small_payload(self, tmp_payload) -> None:
        """Without piece_length a small payload gets the smallest auto size, 2**17."""
        path = tmp_payload(os.urandom(2**20 + 5))
        t = metainfo.create(str(path), ANNOUNCE)
        assert t[b"info"][b"piece length"] == 2**17
        assert len(t[b"info"][b"pieces"]) == 20 * 9

    def test_info_hash_is_sha1_of_raw_info_bytes(self, tmp_payload) -> None:
        """info_hash is the SHA-1 of the info dict bytes as written in the file."""
        path = tmp_payload(os.urandom(50_000))
        encoded = bencodepy.encode(metainfo.create(str(path), ANNOUNCE, comment="c"))
        m = metainfo.parse(encoded)
        assert m.info_hash == hashlib.sha1(_raw_info_slice(encoded)).digest()
        assert len(m.info_hash) == 20
        assert metainfo.info_hash(bencodepy.decode(encoded)[b"info"]) == m.info_hash

    def test_info_hash_ignores_outside_info(self, tmp_payload) -> None:
        """Comment, announce and date are outside info: the info hash does not change."""
        path = tmp_payload(b"same payload")
        a = metainfo.create(str(path), ANNOUNCE, comment="one", creation_date=1)
        b = metainfo.create(str(path), "http://other:1/announce", comment="two", creation_date=2)
        assert metainfo.parse(bencodepy.encode(a)).info_hash == \
            metainfo.parse(bencodepy.encode(b)).info_hash

    def test_private_flag(self, tmp_payload) -> None:
        """private=True sets info.private=1, which changes the info hash."""
        path = tmp_payload(b"payload")
        public = metainfo.create(str(path), ANNOUNCE)
        private = metainfo.create(str(path), ANNOUNCE, private=True)
        assert private[b"info"][b"private"] == 1
        assert b"private" not in public[b"info"]
        mp = metainfo.parse(bencodepy.encode(private))
        assert mp.private is True
        assert mp.info_hash != metainfo.parse(bencodepy.encode(public)).info_hash

    def test_creation_date_defaults_to_now(self, tmp_payload) -> None:
        """Without creation_date the torrent carries the current time."""
        path = tmp_payload(b"payload")
        before = int(time.time())
        t = metainfo.create(str(path), ANNOUNCE)
        after = int(time.time())
        assert before <= t[b"creation date"] <= after

    def test_no_comment_no_key(self, tmp_payload) -> None:
        """Without a comment there is no 'comment' key and Metainfo.comment is None."""
        path = tmp_payload(b"payload")
        t = metainfo.create(str(path), ANNOUNCE)
        assert b"comment" not in t
        assert metainfo.parse(bencodepy.encode(t)).comment is None

    def test_announce_list(self, tmp_payload) -> None:
        """announce_list is stored as BEP 12 tiers and read back in order."""
        path = tmp_payload(b"payload")
        tiers = [[ANNOUNCE], ["http://b1:1/announce", "http://b2:2/announce"]]
        t = metainfo.create(str(path), ANNOUNCE, announce_list=tiers)
        assert t[b"announce-list"] == [[u.encode() for u in tier] for tier in tiers]
        m = metainfo.parse(bencodepy.encode(t))
        assert m.announce_list == ((ANNOUNCE,), ("http://b1:1/announce", "http://b2:2/announce"))

    def test_progress_callback(self, tmp_payload) -> None:
        """progress gets (done, total), never decreasing, ending at (total, total)."""
        size = 2**14 * 5 + 3
        path = tmp_payload(os.urandom(size))
        calls: list[tuple[int, int]] = []
        metainfo.create(str(path), ANNOUNCE, piece_length=2**14,
                        progress=lambda done, total: calls.append((done, total)))
        assert len(calls) >= 5
        assert all(total == size for _, total in calls)
        dones = [d for d, _ in calls]
        assert dones == sorted(dones)
        assert calls[-1] == (size, size)

    def test_symlink_path_followed(self, tmp_path, tmp_payload) -> None:
        """A symlink given as the path is followed; the torrent takes the link's name."""
        target = tmp_payload(b"linked payload", name="real")
        link = tmp_path / "release"
        link.symlink_to(target)
        t = metainfo.create(str(link), ANNOUNCE)
        assert t[b"info"][b"name"] == b"release"
        assert t[b"info"][b"length"] == len(b"linked payload")


class CreateDirectoryTests:
    """create() on a directory (multi-file torrent)."""

    def test_files_and_offsets(self, tmp_payload) -> None:
        """Files are listed with their lengths and running offsets; pieces span files."""
        spec = {"a/one": os.urandom(20_000), "b": os.urandom(30_000), "c/d/e": os.urandom(1)}
        path = tmp_payload(spec, name="rel")
        t = metainfo.create(str(path), ANNOUNCE, piece_length=2**14)
        m = metainfo.parse(bencodepy.encode(t))
        assert m.multi_file is True
        assert m.name == "rel"
        assert [(f.path, f.length, f.offset) for f in m.files] == [
            (("rel", "a", "one"), 20_000, 0),
            (("rel", "b"), 30_000, 20_000),
            (("rel", "c", "d", "e"), 1, 50_000),
        ]
        assert m.files[2].relpath == os.path.join("rel", "c", "d", "e")
        joined = spec["a/one"] + spec["b"] + spec["c/d/e"]
        assert b"".join(m.pieces) == _sha1_pieces(joined, 2**14)
        assert m.total_length == len(joined)
        assert m.piece_size(m.num_pieces - 1) == len(joined) % 2**14
        assert b"length" not in t[b"info"]

    def test_bytewise_component_order(self, tmp_payload) -> None:
        """Files are ordered bytewise by path component, not by creation order."""
        names = ["z", "a.b", "a/2", "a/10", "B"]
        path = tmp_payload({n: n.encode() for n in names})
        t = metainfo.create(str(path), ANNOUNCE)
        listed = [b"/".join(f[b"path"]).decode() for f in t[b"info"][b"files"]]
        assert listed == ["B", "a/10", "a/2", "a.b", "z"]

    def test_same_bytes_whatever_creation_order(self, tmp_path: Path) -> None:
        """Two trees with equal content made in opposite orders give identical torrents."""
        names = [f"d{i % 3}/f{i:02d}" for i in range(12)] + ["top", "zz/last"]
        roots = []
        for parent, order in (("one", names), ("two", list(reversed(names)))):
            root = tmp_path / parent / "payload"
            for i, n in enumerate(order):
                p = root / n
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_bytes(n.encode() * 100)
                os.utime(p, (1_000_000 + i, 1_000_000 + i))
            roots.append(root)
        a, b = (bencodepy.encode(metainfo.create(str(r), ANNOUNCE, creation_date=7)) for r in roots)
        assert a == b

    def test_symlinks_skipped(self, tmp_path: Path, tmp_payload) -> None:
        """Symlinks inside the tree (to files, to dirs, dangling) are not in the torrent."""
        outside = tmp_payload({"secret": b"do not ship"}, name="outside")
        path = tmp_payload({"real": b"shipped", "sub/inner": b"also"}, name="payload")
        (path / "link-to-file").symlink_to(path / "real")
        (path / "link-to-outside").symlink_to(outside / "secret")
        (path / "link-to-dir").symlink_to(outside, target_is_directory=True)
        (path / "dangling").symlink_to(tmp_path / "missing")
        t = metainfo.create(str(path), ANNOUNCE)
        listed = [b"/".join(f[b"path"]) for f in t[b"info"][b"files"]]
        assert listed == [b"real", b"sub/inner"]

    def test_empty_files_kept(self, tmp_payload) -> None:
        """Zero-length files inside a non-empty tree are listed (length 0)."""
        path = tmp_payload({"empty": b"", "full": b"data"})
        m = metainfo.parse(bencodepy.encode(metainfo.create(str(path), ANNOUNCE)))
        assert [(f.path[1:], f.length, f.offset) for f in m.files] == [
            (("empty",), 0, 0), (("full",), 4, 0)]

    def test_trailing_slash(self, tmp_payload) -> None:
        """A directory given with a trailing slash is named after its basename."""
        path = tmp_payload({"f": b"x"}, name="rel")
        t = metainfo.create(str(path) + "/", ANNOUNCE)
        assert t[b"info"][b"name"] == b"rel"


class CreateErrorTests:
    """create() refuses unusable sources with a SourceError."""

    def test_missing_path(self, tmp_path: Path) -> None:
        """A missing path names the absolute path and says so."""
        missing = tmp_path / "nope"
        with pytest.raises(SourceError) as e:
            metainfo.create(str(missing), ANNOUNCE)
        assert str(e.value) == f"cannot make a torrent of {missing}: no such file or directory"
        assert e.value.exit_code == 1

    def test_empty_file(self, tmp_payload) -> None:
        """An empty file cannot be a payload."""
        path = tmp_payload(b"")
        with pytest.raises(SourceError) as e:
            metainfo.create(str(path), ANNOUNCE)
        assert str(e.value) == f"cannot make a torrent of {path}: payload is empty"

    def test_directory_of_empty_files(self, tmp_payload) -> None:
        """A tree whose files are all empty is an empty payload."""
        path = tmp_payload({"a": b"", "b/c": b""})
        with pytest.raises(SourceError) as e:
            metainfo.create(str(path), ANNOUNCE)
        assert str(e.value) == f"cannot make a torrent of {path}: payload is empty"

    def test_directory_without_files(self, tmp_path: Path) -> None:
        """A directory holding only subdirectories and symlinks has no files."""
        path = tmp_path / "payload"
        (path / "sub").mkdir(parents=True)
        (path / "link").symlink_to("/etc/hostname")
        with pytest.raises(SourceError) as e:
            metainfo.create(str(path), ANNOUNCE)
        assert str(e.value) == f"cannot make a torrent of {path}: directory holds no files"

    @pytest.mark.parametrize("length", [300_000, 2**13, 2**14 + 1, -2**14])
    def test_bad_piece_length(self, tmp_payload, length: int) -> None:
        """Piece lengths that are not a power of two >= 16 KiB are refused."""
        path = tmp_payload(b"payload")
        with pytest.raises(SourceError) as e:
            metainfo.create(str(path), ANNOUNCE, piece_length=length)
        assert str(e.value) == (
            f"cannot make a torrent of {path}: piece length {length} is not a power of two >= 16384")

    def test_zero_piece_length(self, tmp_payload) -> None:
        """An explicit piece length of 0 is refused, not silently replaced by auto sizing."""
        path = tmp_payload(b"payload")
        with pytest.raises(SourceError) as e:
            metainfo.create(str(path), ANNOUNCE, piece_length=0)
        assert str(e.value) == (
            f"cannot make a torrent of {path}: piece length 0 is not a power of two >= 16384")

    def test_piece_length_above_maximum(self, tmp_payload) -> None:
        """A piece length above MAX_PIECE_LENGTH (16 MiB) is refused."""
        path = tmp_payload(b"payload")
        with pytest.raises(SourceError) as e:
            metainfo.create(str(path), ANNOUNCE, piece_length=2**25)
        assert str(e.value) == (f"cannot make a torrent of {path}: piece length {2**25} is not "
                                f"a power of two >= 16384 and <= 16777216")
        assert metainfo.MAX_PIECE_LENGTH == 2**24
        metainfo.create(str(path), ANNOUNCE, piece_length=2**24)  # the maximum itself is fine

    @pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
    def test_unreadable_file(self, tmp_payload) -> None:
        """An unreadable file gives a SourceError naming it, not an OSError."""
        path = tmp_payload({"ok": b"x", "locked": b"y"})
        (path / "locked").chmod(0)
        with pytest.raises(SourceError) as e:
            metainfo.create(str(path), ANNOUNCE)
        assert str(e.value) == f"cannot make a torrent of {path / 'locked'}: Permission denied"

    @pytest.mark.parametrize("bad_name, reason", [
        (b"\xff\xfe.bin", "not valid UTF-8"),
        (b"back\\slash", "path element 'back\\\\slash' contains a separator"),
        (b"C:drive", "path element 'C:drive' is absolute"),
    ], ids=["non-utf8", "backslash", "drive"])
    def test_unparseable_file_name(self, tmp_path: Path, bad_name: bytes, reason: str) -> None:
        """A file name our own parser would refuse is a SourceError at creation time.

        Otherwise `murder make-torrent` reports "invalid torrent" about a torrent
        it made itself, or (through the library) hands out a dict that every
        murder peer refuses to load.
        """
        root = tmp_path / "payload"
        (root / "sub").mkdir(parents=True)
        (root / "ok").write_bytes(b"fine")
        bad = os.path.join(os.fsencode(root / "sub"), bad_name)
        with open(bad, "wb") as f:
            f.write(b"bad")
        with pytest.raises(SourceError) as e:
            metainfo.create(str(root), ANNOUNCE)
        element = os.fsdecode(bad_name)
        assert str(e.value) == (f"cannot make a torrent of {os.fsdecode(bad)}: file name "
                                f"{element!r} cannot go in a torrent ({reason})")

    @pytest.mark.parametrize("kind", ["file", "directory"])
    @pytest.mark.parametrize("bad_name", [b"back\\slash", b"C:drive", b"\xff.bin"],
                             ids=["backslash", "drive", "non-utf8"])
    def test_unparseable_payload_name(self, tmp_path: Path, kind: str, bad_name: bytes) -> None:
        """The payload's own name (info.name) is checked like the names inside it."""
        path = os.path.join(os.fsencode(tmp_path), bad_name)
        if kind == "directory":
            os.mkdir(path)
            path = os.path.join(path, b"inner")
        with open(path, "wb") as f:
            f.write(b"payload")
        root = os.fsdecode(os.path.join(os.fsencode(tmp_path), bad_name))
        try:
            t = metainfo.create(root, ANNOUNCE)
        except SourceError as e:
            assert os.fsdecode(bad_name) in str(e)
            return
        metainfo.parse(bencodepy.encode(t))  # a torrent we made must load


class AutoPieceLengthTests:
    """auto_piece_length(): powers of two aiming at ~1500 pieces."""

    @pytest.mark.parametrize("total, expected", [
        (1, 2**17), (2**17 * 1500, 2**17), (2**17 * 1500 + 2**17, 2**18),
        (2**30, 2**20), (2**40, 2**24),
    ])
    def test_examples(self, total: int, expected: int) -> None:
        """Sizes grow by doubling from 128 KiB until <= 1500 pieces, capped at 16 MiB."""
        assert metainfo.auto_piece_length(total) == expected

    @given(st.integers(min_value=1, max_value=2**45))
    def test_properties(self, total: int) -> None:
        """Always a power of two in [2**17, 2**24]; <= 1500 pieces unless capped; minimal."""
        length = metainfo.auto_piece_length(total)
        assert length & (length - 1) == 0
        assert 2**17 <= length <= 2**24
        if length < 2**24:
            assert total // length <= 1500
        if length > 2**17:
            assert total // (length // 2) > 1500


# ------------------------------------------------------------------ loading


class MetainfoPropertyTests:
    """Properties of a parsed Metainfo."""

    def test_trackers_order_and_dedup(self) -> None:
        """trackers lists announce-list tiers in order, deduplicated, then announce."""
        t = _single()
        t[b"announce"] = b"http://main/announce"
        t[b"announce-list"] = [[b"http://a/announce", b"http://b/announce"],
                               [b"http://b/announce", b"http://main/announce"], []]
        m = metainfo.parse(bencodepy.encode(t))
        assert m.trackers == ("http://a/announce", "http://b/announce", "http://main/announce")
        assert m.announce_list == (("http://a/announce", "http://b/announce"),
                                   ("http://b/announce", "http://main/announce"))

    def test_trackers_announce_only(self) -> None:
        """Without announce-list, trackers is just the announce URL."""
        assert metainfo.parse(bencodepy.encode(_single())).trackers == (ANNOUNCE,)

    def test_trackers_none(self) -> None:
        """A trackerless torrent loads with announce None and no trackers."""
        t = _single()
        del t[b"announce"]
        m = metainfo.parse(bencodepy.encode(t))
        assert m.announce is None
        assert m.trackers == ()

    def test_encode_round_trip(self) -> None:
        """encode() gives back the exact canonical bytes that were parsed."""
        data = bencodepy.encode(_multi())
        m = metainfo.parse(data)
        assert m.encode() == data
        assert metainfo.parse(m.encode()) == m

    def test_unknown_keys_kept(self) -> None:
        """Unknown keys are ignored for validation but kept (and hashed) in raw."""
        t = _single()
        t[b"info"][b"x-extra"] = b"kept"
        t[b"url-list"] = [b"http://mirror/"]
        data = bencodepy.encode(t)
        m = metainfo.parse(data)
        assert m.encode() == data
        assert m.info_hash == hashlib.sha1(_raw_info_slice(data)).digest()

    def test_non_utf8_comment_replaced(self) -> None:
        """A comment in another encoding still loads (it is informational only)."""
        t = _single()
        t[b"comment"] = b"caf\xe9"
        assert metainfo.parse(bencodepy.encode(t)).comment == "caf\ufffd"

    def test_load_reads_file(self, tmp_path: Path) -> None:
        """load() parses a torrent file from disk."""
        data = bencodepy.encode(_multi())
        p = tmp_path / "t.torrent"
        p.write_bytes(data)
        assert metainfo.load(str(p)) == metainfo.parse(data)

    def test_moderate_nesting_accepted(self) -> None:
        """Ordinary nesting (ten levels in an unknown key) is fine."""
        t = _single()
        value: Any = b"leaf"
        for _ in range(10):
            value = [value]
        t[b"x-nested"] = value
        metainfo.parse(bencodepy.encode(t))

    def test_metainfo_error_is_murder_error(self) -> None:
        """MetainfoError is a MurderError with exit code 1 and keeps reason/field."""
        e = _error(bencodepy.encode({b"info": {}}))
        assert isinstance(e, MurderError)
        assert e.exit_code == 1
        assert (e.reason, e.field) == ("missing key 'name'", "info")


#: (id, base torrent factory, mutation, exact message)
_BAD_CASES = [
    ("no-info", _single, _del(b"info"), "missing key 'info'"),
    ("info-list", _single, _set(b"info", [1]), "'info' must be dict, not list"),
    ("no-name", _single, _del(b"info", b"name"), "missing key 'name' (at info)"),
    ("name-int", _single, _set(b"info", b"name", 5), "'name' must be bytes, not int (at info)"),
    ("name-empty", _single, _set(b"info", b"name", b""),
     "path element '' is not allowed (at info.name)"),
    ("name-dotdot", _single, _set(b"info", b"name", b".."),
     "path element '..' is not allowed (at info.name)"),
    ("name-slash", _single, _set(b"info", b"name", b"../etc"),
     "path element '../etc' contains a separator (at info.name)"),
    ("name-utf8", _single, _set(b"info", b"name", b"\xff"), "not valid UTF-8 (at info.name)"),
    ("no-piece-length", _single, _del(b"info", b"piece length"),
     "missing key 'piece length' (at info)"),
    ("piece-length-str", _single, _set(b"info", b"piece length", b"16384"),
     "'piece length' must be int, not bytes (at info)"),
    ("piece-length-zero", _single, _set(b"info", b"piece length", 0),
     "piece length must be positive, not 0 (at info.piece length)"),
    ("piece-length-negative", _single, _set(b"info", b"piece length", -16384),
     "piece length must be positive, not -16384 (at info.piece length)"),
    ("no-pieces", _single, _del(b"info", b"pieces"), "missing key 'pieces' (at info)"),
    ("pieces-list", _single, _set(b"info", b"pieces", [b"x" * 20]),
     "'pieces' must be bytes, not list (at info)"),
    ("pieces-not-20", _single, _set(b"info", b"pieces", b"x" * 59),
     "pieces length 59 is not a multiple of 20 (at info.pieces)"),
    ("too-few-pieces", _single, _set(b"info", b"pieces", b"x" * 40),
     "2 piece hashes for 40000 bytes at piece length 16384 (expected 3) (at info.pieces)"),
    ("too-many-pieces", _single, _set(b"info", b"pieces", b"x" * 80),
     "4 piece hashes for 40000 bytes at piece length 16384 (expected 3) (at info.pieces)"),
    ("no-length-no-files", _single, _del(b"info", b"length"),
     "exactly one of 'length' and 'files' is required (at info)"),
    ("length-and-files", _single, _set(b"info", b"files", []),
     "exactly one of 'length' and 'files' is required (at info)"),
    ("length-str", _single, _set(b"info", b"length", b"40000"),
     "'length' must be int, not bytes (at info)"),
    ("length-negative", _single, _set(b"info", b"length", -1), "negative length -1 (at info.length)"),
    ("zero-length", _single, lambda t: t[b"info"].update({b"length": 0, b"pieces": b""}),
     "payload is empty (at info)"),
    ("announce-int", _single, _set(b"announce", 1), "'announce' must be bytes, not int"),
    ("announce-utf8", _single, _set(b"announce", b"http://\xff/"), "not valid UTF-8 (at announce)"),
    ("announce-list-str", _single, _set(b"announce-list", b"http://x/"),
     "'announce-list' must be list, not bytes (at announce-list)"),
    ("tier-str", _single, _set(b"announce-list", [b"http://x/"]),
     "tier must be a list (at announce-list[0])"),
    ("tier-url-int", _single, _set(b"announce-list", [[b"http://x/", 3]]),
     "URL must be a string (at announce-list[0][1])"),
    ("creation-date-str", _single, _set(b"creation date", b"today"),
     "'creation date' must be int, not bytes"),
    ("private-str", _single, _set(b"info", b"private", b"1"),
     "'private' must be int, not bytes (at info)"),
    ("files-dict", _multi, _set(b"info", b"files", {b"a": 1}),
     "'files' must be list, not dict (at info)"),
    ("files-empty", _multi, _set(b"info", b"files", []), "'files' is empty (at info.files)"),
    ("entry-int", _multi, _set(b"info", b"files", 0, 7), "file entry must be a dict (at info.files[0])"),
    ("entry-no-length", _multi, _del(b"info", b"files", 1, b"length"),
     "missing key 'length' (at info.files[1])"),
    ("entry-length-str", _multi, _set(b"info", b"files", 1, b"length", b"7"),
     "'length' must be int, not bytes (at info.files[1])"),
    ("entry-length-negative", _multi, _files(([b"a"], -5), ([b"b"], 17)),
     "negative length -5 (at info.files[0].length)"),
    ("entry-no-path", _multi, _del(b"info", b"files", 0, b"path"),
     "missing key 'path' (at info.files[0])"),
    ("entry-path-str", _multi, _set(b"info", b"files", 0, b"path", b"a/one"),
     "'path' must be list, not bytes (at info.files[0])"),
    ("path-empty-list", _multi, _set(b"info", b"files", 0, b"path", []),
     "'path' is empty (at info.files[0].path)"),
    ("path-element-int", _multi, _set(b"info", b"files", 0, b"path", [b"a", 1]),
     "path element must be a string (at info.files[0].path[1])"),
    ("path-element-empty", _multi, _set(b"info", b"files", 0, b"path", [b"a", b""]),
     "path element '' is not allowed (at info.files[0].path[1])"),
    ("path-element-dot", _multi, _set(b"info", b"files", 0, b"path", [b"."]),
     "path element '.' is not allowed (at info.files[0].path[0])"),
    ("path-traversal", _multi, _set(b"info", b"files", 1, b"path", [b"..", b"..", b"etc", b"passwd"]),
     "path element '..' is not allowed (at info.files[1].path[0])"),
    ("path-absolute-posix", _multi, _set(b"info", b"files", 0, b"path", [b"/etc/passwd"]),
     "path element '/etc/passwd' contains a separator (at info.files[0].path[0])"),
    ("path-absolute-windows", _multi, _set(b"info", b"files", 0, b"path", [b"C:evil"]),
     "path element 'C:evil' is absolute (at info.files[0].path[0])"),
    ("path-slash", _multi, _set(b"info", b"files", 0, b"path", [b"a/../../x"]),
     "path element 'a/../../x' contains a separator (at info.files[0].path[0])"),
    ("path-backslash", _multi, _set(b"info", b"files", 0, b"path", [b"..\\x"]),
     "path element '..\\\\x' contains a separator (at info.files[0].path[0])"),
    ("path-nul", _multi, _set(b"info", b"files", 0, b"path", [b"a\x00b"]),
     "path element 'a\\x00b' contains a separator (at info.files[0].path[0])"),
    ("path-utf8", _multi, _set(b"info", b"files", 0, b"path", [b"\xc3"]),
     "not valid UTF-8 (at info.files[0].path[0])"),
    ("duplicate-path", _multi, _files(([b"a", b"b"], 3), ([b"a", b"b"], 4)),
     "duplicate path 'a/b' (at info.files[1])"),
    ("file-then-child", _multi, _files(([b"a"], 3), ([b"a", b"b"], 4)),
     "path 'a/b' lies under a file (at info.files[1])"),
    ("child-then-file", _multi, _files(([b"a", b"b", b"c"], 3), ([b"a", b"b"], 4)),
     "path 'a/b/c' lies under a file (at info.files)"),
    ("multi-all-empty", _multi, _files(([b"a"], 0), ([b"b"], 0)), "payload is empty (at info)"),
    ("nested-too-deep", _single, _set(b"x-deep", [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[b"x"]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]),
     "nested too deeply"),
]


class ParseErrorTests:
    """parse() turns every malformed input into a MetainfoError with a precise message."""

    @pytest.mark.parametrize("base, mutate, message",
                             [c[1:] for c in _BAD_CASES], ids=[c[0] for c in _BAD_CASES])
    def test_malformed(self, base, mutate, message: str) -> None:
        """Each malformation is reported with its reason and key path."""
        t = base()
        metainfo.parse(bencodepy.encode(t))  # the base is valid
        mutate(t)
        assert str(_error(bencodepy.encode(t))) == f"invalid torrent: {message}"

    @pytest.mark.parametrize("data", [b"", b"garbage", b"d4:info", b"i12", b"de junk", b"5:ab"])
    def test_not_bencode(self, data: bytes) -> None:
        """Bytes that are not bencode are reported as such."""
        e = _error(data)
        assert str(e).startswith("invalid torrent: not bencode: ")
        assert e.field is None

    def test_not_bencode_exact(self) -> None:
        """Trailing data after a valid value is named by the decoder's reason."""
        assert str(_error(bencodepy.encode(_single()) + b"x")) == (
            "invalid torrent: not bencode: invalid bencoded value (data after valid prefix)")

    @pytest.mark.parametrize("data, kind", [(b"li1ee", "list"), (b"i42e", "int"), (b"4:spam", "bytes")])
    def test_not_a_dict(self, data: bytes, kind: str) -> None:
        """A top level that is not a dict is refused, naming what it is."""
        assert str(_error(data)) == f"invalid torrent: top level must be a dict, not {kind}"

    def test_deeply_nested_input(self) -> None:
        """100k nested lists do not blow the stack: a MetainfoError, not RecursionError."""
        e = _error(b"d1:x" + b"l" * 100_000 + b"e" * 100_000 + b"e")
        assert str(e).startswith("invalid torrent: ")

    @pytest.mark.parametrize("data", [b"d1:a1:b-6:e", b"d4:infod6:lengthi5e4:name1:a-6:ee"])
    def test_negative_string_length_does_not_hang(self, data: bytes) -> None:
        """A negative string length is refused at once, not an endless decode loop."""
        class Hang(BaseException):
            pass

        def alarm(signum, frame):
            raise Hang()

        # CPU time, not wall time: a loaded machine must not look like a hang.
        previous = signal.signal(signal.SIGPROF, alarm)
        signal.setitimer(signal.ITIMER_PROF, 2.0)
        try:
            e = _error(data)
        except Hang:
            pytest.fail(f"parse({data!r}) still running after 2 s of CPU")
        finally:
            signal.setitimer(signal.ITIMER_PROF, 0)
            signal.signal(signal.SIGPROF, previous)
        assert str(e).startswith("invalid torrent: not bencode: ")

    def test_deeply_nested_dicts(self) -> None:
        """Deep dict nesting in an unknown key is refused as too deep."""
        value: Any = {b"k": b"v"}
        for _ in range(40):
            value = {b"k": value}
        t = _single()
        t[b"x"] = value
        assert str(_error(bencodepy.encode(t))) == "invalid torrent: nested too deeply"

    @pytest.mark.parametrize("info_bytes, extra", [
        # keys out of order (name before length)
        (b"d4:name1:a6:lengthi5e12:piece lengthi16384e6:pieces20:" + b"P" * 20 + b"e", b""),
        # duplicate key: the decoder keeps the last value
        (b"d6:lengthi9e6:lengthi5e4:name1:a12:piece lengthi16384e6:pieces20:" + b"P" * 20 + b"e",
         b""),
        # unsorted info, and its canonical encoding hidden in a later unknown key
        pytest.param(
            b"d4:name1:a6:lengthi5e12:piece lengthi16384e6:pieces20:" + b"P" * 20 + b"e",
            b"COPY"),
    ], ids=["unsorted-keys", "duplicate-key", "canonical-copy-elsewhere"])
    def test_non_canonical_info_dict(self, info_bytes: bytes, extra: bytes) -> None:
        """A non-canonical info dict is refused or hashed over its raw bytes.

        Every other client hashes the bytes in the file; re-encoding gives
        another info hash, so our peers would join a different swarm.
        """
        if extra == b"COPY":
            canonical = bencodepy.encode(bencodepy.decode(info_bytes))
            extra = b"5:x-pad" + str(len(canonical)).encode() + b":" + canonical
        data = b"d8:announce" + str(len(ANNOUNCE)).encode() + b":" + ANNOUNCE.encode() \
            + b"4:info" + info_bytes + extra + b"e"
        try:
            m = metainfo.parse(data)
        except MetainfoError as e:
            assert e.field == "info"
            return
        assert m.info_hash == hashlib.sha1(info_bytes).digest()

    def test_load_missing_file(self, tmp_path: Path) -> None:
        """load() of a missing file is a MetainfoError naming it."""
        p = tmp_path / "missing.torrent"
        with pytest.raises(MetainfoError) as e:
            metainfo.load(str(p))
        assert str(e.value) == f"invalid torrent: cannot read {p}: No such file or directory"

    def test_load_too_large(self, tmp_path: Path) -> None:
        """load() refuses files above 64 MiB without parsing them."""
        p = tmp_path / "huge.torrent"
        with open(p, "wb") as f:
            f.truncate(64 * 1024 * 1024 + 1)
        with pytest.raises(MetainfoError) as e:
            metainfo.load(str(p))
        assert str(e.value) == f"invalid torrent: {p} is larger than 64 MiB"


# ------------------------------------------------------------------ hypothesis

# File names any POSIX file system stores and BitTorrent can carry.  Names our
# parser refuses on purpose (backslash, "X:" prefix, non-UTF-8) are covered by
# CreateErrorTests.test_unparseable_file_name.
_name_chars = st.characters(blacklist_categories=("Cs",), blacklist_characters="/\\\x00:")
_names = st.text(_name_chars, min_size=1, max_size=10).filter(lambda s: s not in (".", ".."))
_trees = st.dictionaries(
    st.lists(_names, min_size=1, max_size=3).map(tuple),
    st.binary(max_size=3000),
    min_size=1, max_size=6,
).filter(lambda d: not any(a != b and b[:len(a)] == a for a in d for b in d))


def _write_tree(root: str, tree: dict[tuple[str, ...], bytes]) -> None:
    for parts, data in tree.items():
        p = os.path.join(root, *parts)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(data)


class RoundTripTests:
    """Hypothesis: what create() writes, parse() reads back unchanged."""

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(tree=_trees, plen_exp=st.integers(14, 16), private=st.booleans(),
           comment=st.none() | st.text(max_size=20).filter(bool))
    def test_directory_round_trip(self, tree, plen_exp: int, private: bool, comment) -> None:
        """create → encode → parse gives the tree's files, order, bytes and options."""
        assume(sum(len(v) for v in tree.values()) > 0)
        with tempfile.TemporaryDirectory() as tmp:
            root = os.path.join(tmp, "payload")
            os.mkdir(root)
            _write_tree(root, tree)
            t = metainfo.create(root, ANNOUNCE, piece_length=2**plen_exp, private=private,
                                comment=comment, creation_date=5)
        data = bencodepy.encode(t)
        m = metainfo.parse(data)
        order = sorted(tree, key=lambda parts: [p.encode() for p in parts])
        assert [f.path for f in m.files] == [("payload", *p) for p in order]
        assert [f.length for f in m.files] == [len(tree[p]) for p in order]
        joined = b"".join(tree[p] for p in order)
        assert b"".join(m.pieces) == _sha1_pieces(joined, 2**plen_exp)
        assert m.total_length == len(joined)
        assert sum(m.piece_size(i) for i in range(m.num_pieces)) == len(joined)
        assert (m.private, m.comment, m.creation_date) == (private, comment, 5)
        assert m.info_hash == hashlib.sha1(_raw_info_slice(data)).digest()
        assert m.encode() == data
        assert metainfo.parse(m.encode()) == m

    @settings(max_examples=40, deadline=None)
    @given(data=st.binary(min_size=1, max_size=70_000), plen_exp=st.integers(14, 15))
    def test_single_file_round_trip(self, data: bytes, plen_exp: int) -> None:
        """A single file's torrent parses back to the same length and hashes."""
        with tempfile.TemporaryDirectory() as tmp:
            p = os.path.join(tmp, "one.bin")
            with open(p, "wb") as f:
                f.write(data)
            t = metainfo.create(p, ANNOUNCE, piece_length=2**plen_exp)
        m = metainfo.parse(bencodepy.encode(t))
        assert m.files == (FileEntry(("one.bin",), len(data), 0),)
        assert b"".join(m.pieces) == _sha1_pieces(data, 2**plen_exp)
        assert m.piece_size(m.num_pieces - 1) == (len(data) - 1) % 2**plen_exp + 1


_bencode_values = st.recursive(
    st.integers() | st.binary(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.binary(max_size=8), children, max_size=4),
    max_leaves=20,
)


@st.composite
def _valid_torrents(draw) -> tuple[dict, dict]:
    """A valid torrent dict built directly (no disk) plus the facts it encodes."""
    plen = 2 ** draw(st.integers(14, 22))
    multi = draw(st.booleans())
    name = draw(_names)
    if multi:
        paths = draw(st.lists(st.lists(_names, min_size=1, max_size=3).map(tuple),
                              min_size=1, max_size=5, unique=True)
                     .filter(lambda ps: not any(a != b and b[:len(a)] == a for a in ps for b in ps)))
        lengths = draw(st.lists(st.integers(0, 2**40), min_size=len(paths), max_size=len(paths)))
        assume(sum(lengths) > 0)
        info: dict = {b"files": [{b"length": n, b"path": [e.encode() for e in p]}
                                 for p, n in zip(paths, lengths)]}
    else:
        paths, lengths = [()], [draw(st.integers(1, 2**40))]
        info = {b"length": lengths[0]}
    total = sum(lengths)
    count = -(-total // plen)
    assume(count <= 5000)
    info.update({b"name": name.encode(), b"piece length": plen,
                 b"pieces": draw(st.binary(min_size=20 * count, max_size=20 * count))})
    if draw(st.booleans()):
        info[b"private"] = 1
    top = {b"info": info, b"announce": draw(st.sampled_from([ANNOUNCE, "udp://t:1"])).encode()}
    extra = draw(st.dictionaries(st.sampled_from([b"x-a", b"x-b", b"url-list"]), _bencode_values))
    top.update(extra)
    facts = {"name": name, "plen": plen, "multi": multi, "count": count, "total": total,
             "paths": [(name, *p) for p in paths], "lengths": lengths}
    return top, facts


class BencodeRoundTripTests:
    """Hypothesis: bencoding valid values and torrents is lossless."""

    @given(_bencode_values)
    def test_bencode_values(self, value) -> None:
        """decode(encode(v)) == v, and re-encoding gives the same bytes."""
        data = bencodepy.encode(value)
        assert bencodepy.decode(data) == value
        assert bencodepy.encode(bencodepy.decode(data)) == data

    @settings(max_examples=150)
    @given(_valid_torrents())
    def test_valid_torrent_dicts(self, torrent) -> None:
        """Any valid torrent dict parses to its facts and re-encodes to the same bytes."""
        top, facts = torrent
        data = bencodepy.encode(top)
        m = metainfo.parse(data)
        assert m.name == facts["name"]
        assert m.multi_file is facts["multi"]
        assert m.piece_length == facts["plen"]
        assert m.num_pieces == facts["count"]
        assert m.total_length == facts["total"]
        assert [f.path for f in m.files] == facts["paths"]
        assert [f.length for f in m.files] == facts["lengths"]
        offsets = [sum(facts["lengths"][:i]) for i in range(len(facts["lengths"]))]
        assert [f.offset for f in m.files] == offsets
        assert m.encode() == data
        assert m.info_hash == hashlib.sha1(_raw_info_slice(data)).digest()
        assert metainfo.parse(m.encode()) == m



class ApiTests:
    """The names the contract promises exist."""

    def test_module_exports_documented_api(self) -> None:
        """create, parse, load, write_atomic, info_hash and the Metainfo fields exist."""
        for name in ("create", "parse", "load", "write_atomic", "info_hash"):
            assert callable(getattr(metainfo, name))
        assert Metainfo.__dataclass_fields__.keys() == {
            "info_hash", "name", "piece_length", "pieces", "files", "multi_file", "announce",
            "announce_list", "private", "comment", "creation_date", "raw"}
