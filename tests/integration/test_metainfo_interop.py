"""Interop: our torrents load in standard tools, and theirs load in ours.

Both directions must agree on the info hash, the swarm's identity: a
difference means our peers and standard clients would never meet.  Each test
skips cleanly when its tool (transmission-show, mktorrent, the libtorrent
Python bindings) is not installed.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import warnings
from pathlib import Path

import bencodepy
import pytest

from murder import metainfo
from murder.errors import MetainfoError

pytestmark = [pytest.mark.interop, pytest.mark.integration]

ANNOUNCE = "http://127.0.0.1:8998/announce"


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed")
    return path


def _libtorrent():
    return pytest.importorskip("libtorrent")


def _lt_v1_hash(lt, path: Path) -> str:
    """libtorrent's v1 info hash (hex) of a torrent file."""
    info = lt.torrent_info(str(path))
    hashes = getattr(info, "info_hashes", None)
    return str(hashes().v1 if hashes else info.info_hash())


def _transmission_hash(path: Path) -> str:
    """The 'Hash:' line of transmission-show (3.x; 4.x says 'Hash v1:')."""
    r = subprocess.run([_tool("transmission-show"), str(path)], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r.stderr
    match = re.search(r"^\s*Hash(?: v1)?:\s*([0-9a-f]{40})\s*$", r.stdout, re.M)
    assert match, r.stdout
    return match.group(1)


@pytest.fixture
def payloads(tmp_payload) -> dict[str, Path]:
    """A single file with a short last piece, and a small nested tree."""
    return {
        "single": tmp_payload(os.urandom(3 * 2**15 + 777), name="release.tgz", parent="s"),
        "multi": tmp_payload({"bin/app": os.urandom(70_000), "etc/app.conf": b"k = v\n" * 100,
                              "README": os.urandom(33_333), "lib/x/y.so": os.urandom(5)},
                             name="release", parent="m"),
    }


def _ours(tmp_path: Path, payload: Path, **kw) -> tuple[Path, metainfo.Metainfo]:
    """Create and write our torrent of ``payload``; return its path and Metainfo."""
    t = metainfo.create(str(payload), ANNOUNCE, piece_length=2**15, **kw)
    out = tmp_path / f"{payload.name}-{len(kw)}.torrent"
    metainfo.write_atomic(str(out), bencodepy.encode(t))
    return out, metainfo.load(str(out))


KINDS = ["single", "multi"]
OPTIONS = [{}, {"private": True, "comment": "c", "announce_list": [[ANNOUNCE], ["http://b/a"]]}]


class OursInTransmissionTests:
    """transmission-show reads our torrents."""

    @pytest.mark.parametrize("kind", KINDS)
    @pytest.mark.parametrize("options", OPTIONS, ids=["plain", "private+list"])
    def test_same_info_hash(self, tmp_path: Path, payloads, kind: str, options: dict) -> None:
        """transmission-show prints the info hash we computed."""
        out, m = _ours(tmp_path, payloads[kind], **options)
        assert _transmission_hash(out) == m.info_hash.hex()

    def test_lists_our_files(self, tmp_path: Path, payloads) -> None:
        """transmission-show lists every file of a multi-file torrent under its name."""
        out, m = _ours(tmp_path, payloads["multi"])
        shown = subprocess.run([_tool("transmission-show"), str(out)], capture_output=True,
                               text=True, timeout=30).stdout
        for f in m.files:
            assert "/".join(f.path) in shown


class OursInLibtorrentTests:
    """libtorrent's torrent_info reads our torrents."""

    @pytest.mark.parametrize("kind", KINDS)
    @pytest.mark.parametrize("options", OPTIONS, ids=["plain", "private+list"])
    def test_same_info_hash_and_layout(self, tmp_path: Path, payloads, kind: str,
                                       options: dict) -> None:
        """libtorrent agrees on info hash, piece length, piece count, files and sizes."""
        lt = _libtorrent()
        out, m = _ours(tmp_path, payloads[kind], **options)
        assert _lt_v1_hash(lt, out) == m.info_hash.hex()
        ti = lt.torrent_info(str(out))
        assert ti.piece_length() == m.piece_length
        assert ti.num_pieces() == m.num_pieces
        assert ti.total_size() == m.total_length
        assert ti.piece_size(m.num_pieces - 1) == m.piece_size(m.num_pieces - 1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            fs = ti.files()
        assert [fs.file_path(i).split(os.sep) for i in range(fs.num_files())] == \
            [list(f.path) for f in m.files]
        assert [fs.file_size(i) for i in range(fs.num_files())] == [f.length for f in m.files]
        assert ti.priv() == m.private
        for i in range(m.num_pieces):
            assert bytes(ti.hash_for_piece(i)) == m.pieces[i]


class MktorrentInOursTests:
    """Torrents made by Debian's mktorrent load in ours."""

    def _mktorrent(self, tmp_path: Path, payload: Path, *extra: str) -> Path:
        out = tmp_path / f"mk-{payload.name}-{len(extra)}.torrent"
        r = subprocess.run([_tool("mktorrent"), "-a", ANNOUNCE, "-l", "15", "-o", str(out),
                            *extra, str(payload)], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        return out

    @pytest.mark.parametrize("kind", KINDS)
    @pytest.mark.parametrize("extra", [(), ("-p", "-c", "made by mktorrent")], ids=["plain", "private"])
    def test_loads_with_same_hash(self, tmp_path: Path, payloads, kind: str, extra) -> None:
        """Ours loads it; its info hash equals the one libtorrent or transmission computes."""
        out = self._mktorrent(tmp_path, payloads[kind], *extra)
        m = metainfo.load(str(out))
        assert m.name == payloads[kind].name
        assert m.multi_file is (kind == "multi")
        assert m.private is bool(extra)
        assert m.announce == ANNOUNCE
        try:
            lt = _libtorrent()
        except pytest.skip.Exception:
            assert _transmission_hash(out) == m.info_hash.hex()
        else:
            assert _lt_v1_hash(lt, out) == m.info_hash.hex()

    @pytest.mark.parametrize("kind", KINDS)
    def test_same_torrent_as_ours(self, tmp_path: Path, payloads, kind: str) -> None:
        """Same payload, same piece length: mktorrent and we make the same info dict."""
        mk = metainfo.load(str(self._mktorrent(tmp_path, payloads[kind])))
        _, ours = _ours(tmp_path, payloads[kind])
        assert ours.info_hash == mk.info_hash
        assert ours.files == mk.files


class LibtorrentInOursTests:
    """Torrents made by libtorrent.create_torrent load in ours."""

    def _create(self, lt, tmp_path: Path, payload: Path, flags: int) -> Path:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            if hasattr(lt, "list_files"):
                ct = lt.create_torrent(lt.list_files(str(payload)), 2**15, flags=flags)
            else:  # libtorrent < 2.1
                fs = lt.file_storage()
                lt.add_files(fs, str(payload))
                ct = lt.create_torrent(fs, 2**15, flags=flags)
        ct.add_tracker(ANNOUNCE)
        ct.set_comment("by libtorrent")
        lt.set_piece_hashes(ct, str(payload.parent))
        out = tmp_path / f"lt-{payload.name}-{int(flags)}.torrent"
        out.write_bytes(lt.bencode(ct.generate()))
        return out

    @pytest.mark.parametrize("kind", KINDS)
    @pytest.mark.parametrize("version", ["v1_only", "hybrid"])
    def test_loads_with_same_hash(self, tmp_path: Path, payloads, kind: str, version: str) -> None:
        """v1-only and hybrid (v1+v2) torrents load; our hash is libtorrent's v1 hash."""
        lt = _libtorrent()
        flags = lt.create_torrent.v1_only if version == "v1_only" else 0
        out = self._create(lt, tmp_path, payloads[kind], flags)
        m = metainfo.load(str(out))
        assert m.info_hash.hex() == _lt_v1_hash(lt, out)
        assert m.name == payloads[kind].name
        assert m.comment == "by libtorrent"
        assert m.trackers == (ANNOUNCE,)
        ti = lt.torrent_info(str(out))
        assert (m.num_pieces, m.total_length) == (ti.num_pieces(), ti.total_size())

    @pytest.mark.parametrize("kind", KINDS)
    def test_v1_same_torrent_as_ours(self, tmp_path: Path, payloads, kind: str) -> None:
        """A v1-only libtorrent torrent of the same payload matches ours.

        Single file: the same info hash.  Multi-file: libtorrent lists files
        in directory-iteration order, not sorted, so only the set of
        (path, length) pairs must match.
        """
        lt = _libtorrent()
        theirs = metainfo.load(str(self._create(lt, tmp_path, payloads[kind],
                                                lt.create_torrent.v1_only)))
        _, ours = _ours(tmp_path, payloads[kind])
        if kind == "single":
            assert theirs.info_hash == ours.info_hash
        assert sorted((f.path, f.length) for f in theirs.files) == \
            sorted((f.path, f.length) for f in ours.files)
        assert theirs.total_length == ours.total_length


class NonCanonicalTests:
    """A torrent whose info dict is not canonical bencode (keys out of order)."""

    INFO = (b"d4:name1:a6:lengthi5e12:piece lengthi16384e6:pieces20:"
            + hashlib.sha1(b"hello").digest() + b"e")

    @pytest.mark.parametrize("hide_copy", [
        False,
        pytest.param(True),
    ], ids=["plain", "canonical-copy-elsewhere"])
    def test_refused_or_same_hash_as_libtorrent(self, tmp_path: Path, hide_copy: bool) -> None:
        """Ours refuses it or computes libtorrent's info hash, never a third swarm id."""
        lt = _libtorrent()
        extra = b""
        if hide_copy:
            canonical = bencodepy.encode(bencodepy.decode(self.INFO))
            extra = b"5:x-pad" + str(len(canonical)).encode() + b":" + canonical
        path = tmp_path / "nc.torrent"
        path.write_bytes(b"d8:announce" + str(len(ANNOUNCE)).encode() + b":" + ANNOUNCE.encode()
                         + b"4:info" + self.INFO + extra + b"e")
        libtorrent_hash = _lt_v1_hash(lt, path)
        assert libtorrent_hash == hashlib.sha1(self.INFO).hexdigest()
        try:
            m = metainfo.load(str(path))
        except MetainfoError:
            return
        assert m.info_hash.hex() == libtorrent_hash
