"""Unit tests for murder.peer.storage: layouts, resume, atomic finalize, errors."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from murder.errors import PayloadError, StorageError
from murder.peer import storage as storage_mod
from murder.peer.storage import DownloadStorage, PieceStorage, SeedStorage
from murder.testing import build_torrent
from murder.testing import pattern as data

BLOCK = 2**14
PLEN = 2**15


# Files chosen so that boundaries fall inside blocks, with a 1-byte and an
# empty file, and a nested directory.
TREE = {
    "a.bin": data(10_000, 1),
    "one": data(1, 2),
    "empty": b"",
    "sub/deep/b.bin": data(40_000, 3),
    "z": data(5, 4),
}


def single():
    return build_torrent(data(3 * PLEN + 123), name="single.bin", piece_length=PLEN)


def multi():
    return build_torrent(TREE, name="tree", piece_length=PLEN)


def write_payload(root: Path, meta, payload: bytes) -> Path:
    """Lay ``payload`` out on disk under ``root`` as the torrent describes."""
    target = root / meta.name
    if not meta.multi_file:
        target.write_bytes(payload)
        return target
    for f in meta.files:
        path = target.joinpath(*f.path[1:])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(payload[f.offset:f.offset + f.length])
    return target


def download_all(st: PieceStorage, meta, payload: bytes, pieces=None) -> None:
    for i in (range(meta.num_pieces) if pieces is None else pieces):
        st.write_piece(i, payload[i * PLEN:i * PLEN + meta.piece_size(i)])


def stamp(path: Path) -> tuple[int, int, bytes]:
    s = path.stat()
    return s.st_ino, s.st_mtime_ns, path.read_bytes()


class LayoutTests:
    """Pieces and blocks map onto one file or a tree, across file boundaries."""

    def test_multi_file_offsets(self):
        """build_torrent lays out files in order; the helper matches metainfo."""
        meta, payload = multi()
        assert [f.offset for f in meta.files] == [0, 10_000, 10_001, 10_001, 50_001]
        assert meta.total_length == len(payload) == 50_006

    @pytest.mark.parametrize("make", [single, multi])
    def test_read_every_block(self, make, tmp_path):
        """Every 16 KiB block (and odd ranges) reads back the payload's bytes."""
        meta, payload = make()
        st = SeedStorage(meta, str(write_payload(tmp_path, meta, payload)))
        for i in range(meta.num_pieces):
            assert st.read_piece(i) == payload[i * PLEN:i * PLEN + meta.piece_size(i)]
            for begin in range(0, meta.piece_size(i), BLOCK):
                n = min(BLOCK, meta.piece_size(i) - begin)
                assert st.read_block(i, begin, n) == payload[i * PLEN + begin:i * PLEN + begin + n]
        # A range spanning a.bin, one, empty and into b.bin.
        assert st.read(9_990, 20) == payload[9_990:10_010]
        st.verify_all()
        st.close()

    @pytest.mark.parametrize("make", [single, multi])
    def test_write_then_finalize(self, make, tmp_path):
        """Written pieces land in .part; finalize moves the exact payload to the target."""
        meta, payload = make()
        target = tmp_path / meta.name
        st = DownloadStorage(meta, str(target))
        assert st.prepare().count == 0
        download_all(st, meta, payload, reversed(range(meta.num_pieces)))
        assert not target.exists()
        assert st.verify().complete
        st.finalize()
        assert not Path(str(target) + ".part").exists()
        if meta.multi_file:
            for rel, content in TREE.items():
                assert (target / rel).read_bytes() == content
        else:
            assert target.read_bytes() == payload
        # Descriptors survive the rename: uploads keep reading the final file.
        assert st.read_piece(0) == payload[:PLEN]
        st.close()

    def test_check_piece(self, tmp_path):
        """check_piece is True for a matching piece, False for a corrupt or short one."""
        meta, payload = single()
        bad = bytearray(payload)
        bad[PLEN + 5] ^= 1
        path = tmp_path / "f"
        path.write_bytes(bytes(bad[:-1]))
        st = PieceStorage(meta, str(path), writable=False)
        assert st.check_piece(0)
        assert not st.check_piece(1)
        assert not st.check_piece(meta.num_pieces - 1)  # file one byte short
        assert list(st.verify()) == [0, 2]


class ResumeTests:
    """DownloadStorage.prepare reuses verified data from .part and from the target."""

    def test_resume_from_part(self, tmp_path):
        """Verified pieces in .part are kept; corrupt ones are not."""
        meta, payload = single()
        target = tmp_path / meta.name
        first = DownloadStorage(meta, str(target))
        first.prepare()
        download_all(first, meta, payload, [0, 2])
        first.close()
        part = Path(str(target) + ".part")
        raw = bytearray(part.read_bytes())
        raw[2 * PLEN] ^= 0xFF  # corrupt piece 2
        part.write_bytes(bytes(raw))
        second = DownloadStorage(meta, str(target))
        have = second.prepare()
        assert list(have) == [0]
        assert not second.target_complete
        second.close()

    def test_resume_from_older_copy_at_target(self, tmp_path):
        """Good pieces of an older copy at the target are reused; the target is untouched."""
        meta, payload = multi()
        target = write_payload(tmp_path, meta, payload)
        b_file = target / "sub" / "deep" / "b.bin"
        old = bytearray(b_file.read_bytes())
        old[-1] ^= 1  # corrupts the last piece only
        b_file.write_bytes(bytes(old))
        before = stamp(b_file)
        st = DownloadStorage(meta, str(target))
        have = st.prepare()
        assert list(have.missing()) == [meta.num_pieces - 1]
        assert not st.target_complete
        assert stamp(b_file) == before
        last = meta.num_pieces - 1
        download_all(st, meta, payload, [last])
        assert stamp(b_file) == before
        st.finalize()
        assert b_file.read_bytes() == TREE["sub/deep/b.bin"]
        assert not (tmp_path / "tree.old").exists()

    def test_target_complete_nothing_copied(self, tmp_path):
        """A complete verified target: full bitfield, no .part, finalize keeps the inode."""
        meta, payload = single()
        target = write_payload(tmp_path, meta, payload)
        before = stamp(target)
        st = DownloadStorage(meta, str(target))
        have = st.prepare()
        assert have.complete and st.target_complete
        assert not Path(str(target) + ".part").exists()
        st.finalize()
        assert stamp(target) == before
        st.close()

    def test_target_complete_serves_uploads(self, tmp_path):
        """A peer that found the payload complete at the target seeds from the target."""
        meta, payload = single()
        target = write_payload(tmp_path, meta, payload)
        st = DownloadStorage(meta, str(target))
        st.prepare()
        st.finalize()
        assert st.read_block(1, 0, BLOCK) == payload[PLEN:PLEN + BLOCK]
        assert not Path(str(target) + ".part").exists()
        st.close()

    def test_discard_after_target_complete_keeps_target(self, tmp_path):
        """A failure after finding a complete target never deletes the target."""
        meta, payload = single()
        target = write_payload(tmp_path, meta, payload)
        st = DownloadStorage(meta, str(target))
        st.prepare()
        st.discard()
        assert target.read_bytes() == payload

    def test_target_with_trailing_junk_is_replaced(self, tmp_path):
        """A target with the right pieces but the wrong size is rebuilt, not trusted."""
        meta, payload = single()
        target = tmp_path / meta.name
        target.write_bytes(payload + b"junk")
        st = DownloadStorage(meta, str(target))
        have = st.prepare()
        assert have.complete and not st.target_complete
        assert target.read_bytes() == payload + b"junk"
        st.finalize()
        assert target.read_bytes() == payload

    def test_stale_part_and_target_combined(self, tmp_path):
        """Pieces come from both .part and the old target copy."""
        meta, payload = single()
        target = tmp_path / meta.name
        old = bytearray(payload)
        old[0] ^= 1  # target lacks piece 0
        target.write_bytes(bytes(old))
        first = DownloadStorage(meta, str(target))
        first.prepare()
        download_all(first, meta, payload, [0])
        first.close()
        st = DownloadStorage(meta, str(target))
        assert st.prepare().complete
        st.finalize()
        assert target.read_bytes() == payload


class FinalizeDiscardTests:
    """The target is either absent/old or complete; partial data is removable."""

    def test_multi_file_replaces_old_directory(self, tmp_path):
        """An old directory at the target is replaced as a whole, leftovers removed."""
        meta, payload = multi()
        target = tmp_path / "tree"
        (target / "stale").mkdir(parents=True)
        (target / "stale" / "x").write_bytes(b"old")
        st = DownloadStorage(meta, str(target))
        st.prepare()
        download_all(st, meta, payload)
        assert (target / "stale" / "x").exists()
        st.finalize()
        assert not (target / "stale").exists()
        assert (target / "a.bin").read_bytes() == TREE["a.bin"]
        assert (target / "empty").read_bytes() == b""

    def test_finalize_twice_is_harmless(self, tmp_path):
        """A second finalize does nothing."""
        meta, payload = single()
        st = DownloadStorage(meta, str(tmp_path / meta.name))
        st.prepare()
        download_all(st, meta, payload)
        st.finalize()
        st.finalize()
        assert (tmp_path / meta.name).read_bytes() == payload

    @pytest.mark.parametrize("make", [single, multi])
    def test_discard_removes_part(self, make, tmp_path):
        """discard deletes the .part file or directory and never creates the target."""
        meta, payload = make()
        target = tmp_path / meta.name
        st = DownloadStorage(meta, str(target))
        st.prepare()
        download_all(st, meta, payload, [0])
        st.discard()
        assert os.listdir(tmp_path) == []

    def test_discard_after_finalize_keeps_target(self, tmp_path):
        """Once finalized, discard leaves the payload in place."""
        meta, payload = single()
        st = DownloadStorage(meta, str(tmp_path / meta.name))
        st.prepare()
        download_all(st, meta, payload)
        st.finalize()
        st.discard()
        assert (tmp_path / meta.name).read_bytes() == payload


class SymlinkTests:
    """Never write through a symbolic link planted at or inside the target."""

    def test_target_symlink(self, tmp_path):
        """A symlink at the target is refused."""
        meta, _ = single()
        victim = tmp_path / "victim"
        victim.write_bytes(b"keep")
        (tmp_path / meta.name).symlink_to(victim)
        with pytest.raises(StorageError, match="is a symbolic link"):
            DownloadStorage(meta, str(tmp_path / meta.name)).prepare()
        assert victim.read_bytes() == b"keep"

    def test_part_symlink(self, tmp_path):
        """A symlink at <target>.part is refused."""
        meta, _ = single()
        victim = tmp_path / "victim"
        victim.write_bytes(b"keep")
        Path(str(tmp_path / meta.name) + ".part").symlink_to(victim)
        with pytest.raises(StorageError, match="is a symbolic link"):
            DownloadStorage(meta, str(tmp_path / meta.name)).prepare()
        assert victim.read_bytes() == b"keep"

    def test_symlink_inside_part_directory(self, tmp_path):
        """A symlinked sub-directory inside a multi-file .part is refused."""
        meta, _ = multi()
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        part = tmp_path / "tree.part"
        part.mkdir()
        (part / "sub").symlink_to(elsewhere)
        with pytest.raises(StorageError, match=r"tree\.part/sub: is a symbolic link"):
            DownloadStorage(meta, str(tmp_path / "tree")).prepare()
        assert os.listdir(elsewhere) == []


class SeedStorageTests:
    """SeedStorage.check / verify_all refuse a payload that does not match."""

    def test_missing_file(self, tmp_path):
        """A missing payload file names the path and the OS reason."""
        meta, _ = single()
        st = SeedStorage(meta, str(tmp_path / "nope"))
        with pytest.raises(PayloadError) as e:
            st.check()
        assert str(e.value) == (f"payload {tmp_path / 'nope'} does not match the torrent: "
                                "No such file or directory")

    def test_wrong_size(self, tmp_path):
        """A file of the wrong size is refused with both sizes."""
        meta, payload = multi()
        target = write_payload(tmp_path, meta, payload)
        (target / "z").write_bytes(b"123")
        with pytest.raises(PayloadError) as e:
            SeedStorage(meta, str(target)).check()
        assert str(e.value) == (f"payload {target / 'z'} does not match the torrent: "
                                "3 bytes, the torrent says 5")

    def test_bad_piece(self, tmp_path):
        """Corrupt data is found by verify_all, naming the first bad piece and the count."""
        meta, payload = single()
        bad = bytearray(payload)
        bad[PLEN] ^= 1
        bad[3 * PLEN] ^= 1
        path = tmp_path / "f"
        path.write_bytes(bytes(bad))
        with pytest.raises(PayloadError) as e:
            SeedStorage(meta, str(path)).verify_all()
        assert str(e.value) == (f"payload {path} does not match the torrent: "
                                "piece 1 fails its hash (2 bad pieces)")

    def test_good_payload(self, tmp_path):
        """A matching payload passes check and verify_all."""
        meta, payload = multi()
        st = SeedStorage(meta, str(write_payload(tmp_path, meta, payload)))
        st.check()
        st.verify_all()


class StorageErrorTests:
    """OS errors become StorageError with a readable reason."""

    @pytest.mark.parametrize("code, reason", [
        (errno.ENOSPC, "no space left on device"),
        (errno.EDQUOT, "disk quota exceeded"),
        (errno.EACCES, "permission denied"),
        (errno.EROFS, "read-only file system"),
        (errno.EIO, os.strerror(errno.EIO)),
    ])
    def test_mapping(self, code, reason):
        """Known errnos get fixed wording; others the OS's message."""
        err = storage_mod._storage_error("/x", OSError(code, os.strerror(code)))
        assert isinstance(err, StorageError)
        assert str(err) == f"storage error at /x: {reason}"

    def test_missing_destination_directory(self, tmp_path):
        """A target whose directory does not exist is refused before any write."""
        meta, _ = single()
        with pytest.raises(StorageError, match="destination directory does not exist"):
            DownloadStorage(meta, str(tmp_path / "no" / meta.name)).prepare()

    def test_file_where_directory_should_be(self, tmp_path):
        """A file blocking a multi-file torrent's sub-directory fails as StorageError."""
        meta, _ = multi()
        part = tmp_path / "tree.part"
        part.mkdir()
        (part / "sub").write_bytes(b"in the way")
        st = DownloadStorage(meta, str(tmp_path / "tree"))
        with pytest.raises(StorageError) as e:
            st.prepare()
        assert str(part / "sub") in str(e.value)
        st.discard()
        assert not part.exists()

    def test_short_file_read(self, tmp_path):
        """Reading past the end of a short file is a StorageError, not short data."""
        meta, payload = single()
        path = tmp_path / "f"
        path.write_bytes(payload[:100])
        with pytest.raises(StorageError, match="shorter than the torrent says"):
            SeedStorage(meta, str(path)).read_block(0, 0, BLOCK)

    @pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
    def test_unwritable_parent(self, tmp_path):
        """A destination directory we may not write to: 'permission denied'."""
        meta, _ = single()
        tmp_path.chmod(0o555)
        try:
            with pytest.raises(StorageError, match="permission denied"):
                DownloadStorage(meta, str(tmp_path / meta.name)).prepare()
        finally:
            tmp_path.chmod(0o755)
