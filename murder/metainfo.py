"""Torrent metainfo: create, load, validate (BEP 3, BEP 12 announce-list).

Loading is the edge where untrusted bytes become a :class:`Metainfo`; every
malformed input raises :class:`~murder.errors.MetainfoError` with a precise
reason and the key path, never a bare ``KeyError``.  Creation streams the
payload piece by piece, so a 1 GiB release costs one piece of memory.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator


from murder import bencode
from murder.errors import MetainfoError, SourceError, StorageError

#: The legacy Capistrano scripts always used 2**18.
LEGACY_PIECE_LENGTH = 2**18
MIN_PIECE_LENGTH = 2**14
#: Auto sizing never goes below this.  A peer can forward a piece only once
#: all of it arrived and verified, so smaller pieces move through a swarm
#: faster; fewer pieces mean fewer HAVEs and hash calls.  128 KiB is also one
#: request between murder peers.  Measured (bench/README.md, N=16, 16 MiB):
#: 256 KiB 7.51, 8.22 s vs 128 KiB 7.28, 7.20 s; 64 KiB no better, more CPU.
MIN_AUTO_PIECE_LENGTH = 2**17
MAX_PIECE_LENGTH = 2**24
#: Auto piece sizing aims at about this many pieces (BitTorrent folklore: 1–2k).
_TARGET_PIECES = 1500
#: Refuse torrents whose bencoding nests deeper than this (hostile input).
_MAX_DEPTH = 32

ProgressCallback = Callable[[int, int], None]


def piece_size(index: int, num_pieces: int, piece_length: int, total_length: int) -> int:
    """Length of piece ``index`` of a payload (the last one may be short).

    The one place this is computed: the metainfo, the wire codec's range
    checks and the picker all ask here.
    """
    if index == num_pieces - 1:
        return total_length - index * piece_length
    return piece_length


@dataclass(frozen=True)
class FileEntry:
    """One file of the payload: its path inside the torrent and its byte range."""

    path: tuple[str, ...]
    length: int
    offset: int

    @property
    def relpath(self) -> str:
        return os.path.join(*self.path)


@dataclass(frozen=True)
class Metainfo:
    """A validated torrent.  ``raw`` keeps the decoded dict for re-encoding."""

    info_hash: bytes
    name: str
    piece_length: int
    pieces: tuple[bytes, ...]
    files: tuple[FileEntry, ...]
    multi_file: bool
    announce: str | None
    announce_list: tuple[tuple[str, ...], ...]
    private: bool
    comment: str | None
    creation_date: int | None
    raw: dict = field(repr=False, compare=False)

    @property
    def total_length(self) -> int:
        last = self.files[-1]
        return last.offset + last.length

    @property
    def num_pieces(self) -> int:
        return len(self.pieces)

    def piece_size(self, index: int) -> int:
        """Length of piece ``index`` (the last one may be short)."""
        return piece_size(index, len(self.pieces), self.piece_length, self.total_length)

    @property
    def trackers(self) -> tuple[str, ...]:
        """Every announce URL, announce-list tiers first (BEP 12), deduplicated."""
        urls: list[str] = []
        for tier in self.announce_list:
            urls.extend(u for u in tier if u not in urls)
        if self.announce and self.announce not in urls:
            urls.append(self.announce)
        return tuple(urls)

    def encode(self) -> bytes:
        return bencode.encode(self.raw)


# --------------------------------------------------------------------- loading


def _decode(data: bytes) -> Any:
    try:
        return bencode.decode(data)
    except (bencode.DecodeError, ValueError, TypeError, IndexError,
            KeyError, RecursionError, UnicodeDecodeError, AttributeError) as e:
        raise MetainfoError(f"not bencode: {e}") from None


def _depth_ok(value: Any, depth: int = 0) -> bool:
    if depth > _MAX_DEPTH:
        return False
    if isinstance(value, dict):
        return all(_depth_ok(v, depth + 1) for v in value.values())
    if isinstance(value, list):
        return all(_depth_ok(v, depth + 1) for v in value)
    return True


def _get(d: dict, key: bytes, kind: type | tuple, where: str, required: bool = True) -> Any:
    if key not in d:
        if required:
            raise MetainfoError(f"missing key '{key.decode()}'", where)
        return None
    value = d[key]
    # bool is an int subclass; bencode has no bools, but be strict anyway.
    if not isinstance(value, kind) or isinstance(value, bool):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise MetainfoError(
            f"'{key.decode()}' must be {names}, not {type(value).__name__}", where
        )
    return value


def _text(value: bytes, where: str) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise MetainfoError("not valid UTF-8", where) from None


def _path_element(raw: Any, where: str) -> str:
    if not isinstance(raw, bytes):
        raise MetainfoError("path element must be a string", where)
    name = _text(raw, where)
    if name in ("", ".", ".."):
        raise MetainfoError(f"path element {name!r} is not allowed", where)
    if "/" in name or "\\" in name or "\x00" in name:
        raise MetainfoError(f"path element {name!r} contains a separator", where)
    if os.path.isabs(name) or (len(name) >= 2 and name[1] == ":"):
        raise MetainfoError(f"path element {name!r} is absolute", where)
    return name


def _length(value: int, where: str) -> int:
    if value < 0:
        raise MetainfoError(f"negative length {value}", where)
    return value


def _announce_list(top: dict) -> tuple[tuple[str, ...], ...]:
    raw = _get(top, b"announce-list", list, "announce-list", required=False)
    if raw is None:
        return ()
    tiers = []
    for t, tier in enumerate(raw):
        if not isinstance(tier, list):
            raise MetainfoError("tier must be a list", f"announce-list[{t}]")
        urls = []
        for u, url in enumerate(tier):
            if not isinstance(url, bytes):
                raise MetainfoError("URL must be a string", f"announce-list[{t}][{u}]")
            urls.append(_text(url, f"announce-list[{t}][{u}]"))
        if urls:
            tiers.append(tuple(urls))
    return tuple(tiers)


def parse(data: bytes) -> Metainfo:
    """Decode and validate torrent bytes; raise :class:`MetainfoError` on any flaw."""
    top = _decode(data)
    if not isinstance(top, dict):
        raise MetainfoError(f"top level must be a dict, not {type(top).__name__}")
    if not _depth_ok(top):
        raise MetainfoError("nested too deeply")
    info = _get(top, b"info", dict, "")
    raw_info = bencode.raw_value(data, b"info")
    if bencode.encode(info) != raw_info:
        # Every client hashes the info bytes as found in the file; a dict whose
        # re-encoding differs (unsorted or duplicate keys) would give us another
        # info hash and another swarm, so refuse it.
        raise MetainfoError("info dict is not canonical bencode (unsorted or duplicate keys)",
                            "info")
    name = _path_element(_get(info, b"name", bytes, "info"), "info.name")
    piece_length = _get(info, b"piece length", int, "info")
    if piece_length <= 0:
        raise MetainfoError(f"piece length must be positive, not {piece_length}", "info.piece length")
    pieces_blob = _get(info, b"pieces", bytes, "info")
    if len(pieces_blob) % 20:
        raise MetainfoError(
            f"pieces length {len(pieces_blob)} is not a multiple of 20", "info.pieces"
        )
    pieces = tuple(pieces_blob[i:i + 20] for i in range(0, len(pieces_blob), 20))

    has_length = b"length" in info
    has_files = b"files" in info
    if has_length == has_files:
        raise MetainfoError("exactly one of 'length' and 'files' is required", "info")
    files: list[FileEntry] = []
    if has_length:
        length = _length(_get(info, b"length", int, "info"), "info.length")
        files.append(FileEntry((name,), length, 0))
    else:
        raw_files = _get(info, b"files", list, "info")
        if not raw_files:
            raise MetainfoError("'files' is empty", "info.files")
        offset = 0
        seen: set[tuple[str, ...]] = set()
        for i, entry in enumerate(raw_files):
            where = f"info.files[{i}]"
            if not isinstance(entry, dict):
                raise MetainfoError("file entry must be a dict", where)
            length = _length(_get(entry, b"length", int, where), where + ".length")
            raw_path = _get(entry, b"path", list, where)
            if not raw_path:
                raise MetainfoError("'path' is empty", where + ".path")
            path = tuple(_path_element(p, f"{where}.path[{j}]") for j, p in enumerate(raw_path))
            if path in seen:
                raise MetainfoError(f"duplicate path {'/'.join(path)!r}", where)
            # A file and a directory of the same name cannot both exist.
            for k in range(1, len(path)):
                if path[:k] in seen:
                    raise MetainfoError(f"path {'/'.join(path)!r} lies under a file", where)
            seen.add(path)
            files.append(FileEntry((name, *path), length, offset))
            offset += length
        for entry in files:
            for k in range(2, len(entry.path)):
                if entry.path[1:k] in seen:
                    raise MetainfoError(
                        f"path {'/'.join(entry.path[1:])!r} lies under a file", "info.files"
                    )

    total = files[-1].offset + files[-1].length
    expected = -(-total // piece_length) if total else 0
    if len(pieces) != expected:
        raise MetainfoError(
            f"{len(pieces)} piece hashes for {total} bytes at piece length "
            f"{piece_length} (expected {expected})",
            "info.pieces",
        )
    if total == 0:
        raise MetainfoError("payload is empty", "info")

    announce_raw = _get(top, b"announce", bytes, "", required=False)
    announce = _text(announce_raw, "announce") if announce_raw is not None else None
    comment_raw = _get(top, b"comment", bytes, "", required=False)
    creation = _get(top, b"creation date", int, "", required=False)
    private = _get(info, b"private", int, "info", required=False)
    return Metainfo(
        info_hash=hashlib.sha1(raw_info).digest(),
        name=name,
        piece_length=piece_length,
        pieces=pieces,
        files=tuple(files),
        multi_file=has_files,
        announce=announce,
        announce_list=_announce_list(top),
        private=bool(private),
        comment=comment_raw.decode("utf-8", "replace") if comment_raw is not None else None,
        creation_date=creation,
        raw=top,
    )


def load(path: str) -> Metainfo:
    """Read and validate a torrent file."""
    try:
        with open(path, "rb") as f:
            data = f.read(64 * 1024 * 1024 + 1)
    except OSError as e:
        raise MetainfoError(f"cannot read {path}: {e.strerror}") from None
    if len(data) > 64 * 1024 * 1024:
        raise MetainfoError(f"{path} is larger than 64 MiB")
    return parse(data)


def info_hash(info: dict) -> bytes:
    """SHA-1 of the bencoded info dict: the torrent's identity."""
    return hashlib.sha1(bencode.encode(info)).digest()


# -------------------------------------------------------------------- creation


def auto_piece_length(total: int) -> int:
    """A power of two between 128 KiB and 16 MiB giving about 1500 pieces."""
    length = MIN_AUTO_PIECE_LENGTH
    while length < MAX_PIECE_LENGTH and total // length > _TARGET_PIECES:
        length *= 2
    return length


def _walk(root: str) -> list[tuple[tuple[str, ...], str]]:
    """Files under ``root`` in a deterministic (sorted, bytewise) order."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in sorted(filenames):
            full = os.path.join(dirpath, name)
            if os.path.islink(full) or not os.path.isfile(full):
                continue
            rel = tuple(os.path.relpath(full, root).split(os.sep))
            for j, element in enumerate(rel):
                try:
                    _path_element(os.fsencode(element), "")
                except MetainfoError as e:
                    raise SourceError(full, f"file name {element!r} cannot go in a torrent "
                                      f"({e.reason})") from None
            found.append((rel, full))
    found.sort(key=lambda item: [p.encode("utf-8", "surrogateescape") for p in item[0]])
    return found


def _stream_pieces(paths: Iterable[str], piece_length: int, total: int,
                   progress: ProgressCallback | None) -> Iterator[bytes]:
    sha = hashlib.sha1()
    filled = 0
    done = 0
    for path in paths:
        with open(path, "rb") as f:
            while True:
                chunk = f.read(piece_length - filled)
                if not chunk:
                    break
                sha.update(chunk)
                filled += len(chunk)
                done += len(chunk)
                if filled == piece_length:
                    yield sha.digest()
                    sha = hashlib.sha1()
                    filled = 0
                    if progress:
                        progress(done, total)
    if filled:
        yield sha.digest()
    if progress:
        progress(done, total)


def create(path: str, announce: str, *, piece_length: int | None = None,
           announce_list: list[list[str]] | None = None, comment: str | None = None,
           private: bool = False, creation_date: int | None = None,
           created_by: str | None = "murder",
           progress: ProgressCallback | None = None) -> dict:
    """Build the torrent dict for the file or directory at ``path``.

    Hashing streams the payload; memory use is one piece.  Raises
    :class:`SourceError` if ``path`` is missing, unreadable or holds no bytes.
    """
    path = os.path.abspath(path)
    if not os.path.exists(path):
        raise SourceError(path, "no such file or directory")
    name = os.path.basename(path.rstrip(os.sep))
    try:
        _path_element(name.encode("utf-8", "surrogateescape"), "")
    except MetainfoError as e:
        raise SourceError(path, f"file name {name!r} cannot go in a torrent ({e.reason})") from None
    info: dict[bytes, Any] = {b"name": name.encode("utf-8", "surrogateescape")}
    try:
        if os.path.isdir(path):
            entries = _walk(path)
            if not entries:
                raise SourceError(path, "directory holds no files")
            sizes = [os.path.getsize(full) for _, full in entries]
            info[b"files"] = [
                {b"length": size, b"path": [p.encode("utf-8", "surrogateescape") for p in rel]}
                for (rel, _), size in zip(entries, sizes)
            ]
            sources = [full for _, full in entries]
            total = sum(sizes)
        else:
            total = os.path.getsize(path)
            info[b"length"] = total
            sources = [path]
        if total == 0:
            raise SourceError(path, "payload is empty")
        plen = auto_piece_length(total) if piece_length is None else piece_length
        if plen < MIN_PIECE_LENGTH or plen > MAX_PIECE_LENGTH or plen & (plen - 1):
            raise SourceError(path, f"piece length {plen} is not a power of two >= {MIN_PIECE_LENGTH}"
                              + (f" and <= {MAX_PIECE_LENGTH}" if plen > MAX_PIECE_LENGTH else ""))
        info[b"piece length"] = plen
        info[b"pieces"] = b"".join(_stream_pieces(sources, plen, total, progress))
    except OSError as e:
        raise SourceError(e.filename or path, e.strerror or str(e)) from None
    if private:
        info[b"private"] = 1
    top: dict[bytes, Any] = {b"announce": announce.encode(), b"info": info}
    if announce_list:
        top[b"announce-list"] = [[u.encode() for u in tier] for tier in announce_list]
    if comment:
        top[b"comment"] = comment.encode()
    if created_by:
        top[b"created by"] = created_by.encode()
    top[b"creation date"] = int(time.time()) if creation_date is None else creation_date
    return top


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomic(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file + fsync + rename (never half a file).

    The file gets the usual ``0666 & ~umask`` mode (mkstemp's 0600 would hide
    it from other deploy users).  Raises :class:`StorageError` on any OSError.
    """
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    except OSError as e:
        raise StorageError(path, e.strerror or str(e)) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), 0o666 & ~_umask())
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise StorageError(path, e.strerror or str(e)) from None
        raise
