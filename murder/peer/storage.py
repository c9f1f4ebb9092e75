"""Payload storage: pieces ↔ files, hashing, resume and the atomic final move.

The payload is written only in whole, verified pieces, into a temporary name
beside the target (``<target>.part``: a file, or a directory for multi-file
torrents).  :meth:`PieceStorage.finalize` renames it over the target once every
piece verified, so a target path never holds partial or unverified data.
Reads for uploading come from the same descriptors, which survive the rename.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import threading
from bisect import bisect_right
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

if TYPE_CHECKING:  # Twisted is imported lazily: the legacy scripts use this module before forking
    from twisted.internet.defer import Deferred

from murder.errors import PayloadError, StorageError
from murder.metainfo import Metainfo
from murder.peer.wire import Bitfield

PART_SUFFIX = ".part"


def _storage_error(path: str, e: OSError) -> StorageError:
    reason = {
        errno.ENOSPC: "no space left on device",
        errno.EDQUOT: "disk quota exceeded",
        errno.EACCES: "permission denied",
        errno.EROFS: "read-only file system",
    }.get(e.errno or 0, e.strerror or str(e))
    return StorageError(path, reason)


class PieceStorage:
    """Random access to a torrent's pieces over one file or a directory tree.

    ``root`` is the path whose basename is the torrent name's place: for a
    single-file torrent the file itself, for a multi-file torrent the top
    directory.  Descriptors are opened lazily and kept open.
    """

    def __init__(self, meta: Metainfo, root: str, writable: bool) -> None:
        self.meta = meta
        self.root = root
        self.writable = writable
        self._offsets = [f.offset for f in meta.files]
        self._fds: dict[int, int] = {}
        #: Descriptors are opened lazily; PieceWriter writes from worker threads.
        self._fd_lock = threading.Lock()

    # -- layout
    def file_path(self, i: int) -> str:
        entry = self.meta.files[i]
        if self.meta.multi_file:
            return os.path.join(self.root, *entry.path[1:])
        return self.root

    def _segments(self, offset: int, length: int) -> Iterable[tuple[int, int, int]]:
        """Yield ``(file index, offset in file, length)`` covering the range."""
        i = bisect_right(self._offsets, offset) - 1
        files = self.meta.files
        while length > 0:
            entry = files[i]
            inner = offset - entry.offset
            n = min(length, entry.length - inner)
            if n > 0:
                yield i, inner, n
                offset += n
                length -= n
            i += 1

    def _fd(self, i: int) -> int:
        fd = self._fds.get(i)
        if fd is None:
            with self._fd_lock:
                fd = self._fds.get(i)
                if fd is None:
                    fd = self._open(i)
        return fd

    def _open(self, i: int) -> int:
        fd = self._fds.get(i)
        if fd is None:
            path = self.file_path(i)
            try:
                if self.writable:
                    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
                    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
                else:
                    fd = os.open(path, os.O_RDONLY)
            except OSError as e:
                raise _storage_error(path, e) from None
            self._fds[i] = fd
        return fd

    # -- I/O
    def read(self, offset: int, length: int) -> bytes:
        parts = []
        for i, inner, n in self._segments(offset, length):
            try:
                data = os.pread(self._fd(i), n, inner)
            except OSError as e:
                raise _storage_error(self.file_path(i), e) from None
            if len(data) != n:
                raise StorageError(self.file_path(i), "file is shorter than the torrent says")
            parts.append(data)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def read_block(self, index: int, begin: int, length: int) -> bytes:
        return self.read(index * self.meta.piece_length + begin, length)

    def read_piece(self, index: int) -> bytes:
        return self.read(index * self.meta.piece_length, self.meta.piece_size(index))

    def write_piece(self, index: int, data: bytes | bytearray | memoryview) -> None:
        """Write one piece the caller has already verified."""
        offset = index * self.meta.piece_length
        view = memoryview(data)
        pos = 0
        for i, inner, n in self._segments(offset, len(view)):
            try:
                fd = self._fd(i)
                while n:
                    written = os.pwrite(fd, view[pos:pos + n], inner)
                    pos += written
                    inner += written
                    n -= written
            except OSError as e:
                raise _storage_error(self.file_path(i), e) from None

    def check_piece(self, index: int) -> bool:
        """True if the bytes on disk for ``index`` match its hash."""
        try:
            data = self.read_piece(index)
        except StorageError:
            return False
        return hashlib.sha1(data).digest() == self.meta.pieces[index]

    def verify(self, progress: Callable[[int], None] | None = None) -> Bitfield:
        """Hash every piece on disk; the set of pieces that match.  Blocking:
        run it in a thread (``deferToThread``); hashlib releases the GIL."""
        have = Bitfield(self.meta.num_pieces)
        for index in range(self.meta.num_pieces):
            if self.check_piece(index):
                have.add(index)
            if progress:
                progress(index)
        return have

    def preallocate(self) -> None:
        """Size every file now so a full disk fails before the download starts."""
        for i, entry in enumerate(self.meta.files):
            fd = self._fd(i)
            try:
                if entry.length:
                    os.posix_fallocate(fd, 0, entry.length)
            except OSError as e:
                if e.errno in (errno.EOPNOTSUPP, errno.EINVAL):
                    try:
                        os.ftruncate(fd, entry.length)
                    except OSError as e2:
                        raise _storage_error(self.file_path(i), e2) from None
                else:
                    raise _storage_error(self.file_path(i), e) from None

    def sync(self) -> None:
        for i, fd in self._fds.items():
            try:
                os.fsync(fd)
            except OSError as e:
                raise _storage_error(self.file_path(i), e) from None

    def close(self) -> None:
        for fd in self._fds.values():
            try:
                os.close(fd)
            except OSError:
                pass
        self._fds.clear()


def _exists(path: str) -> bool:
    return os.path.lexists(path)


class DownloadStorage(PieceStorage):
    """Writes into ``<target>.part`` and moves it to ``target`` when complete."""

    def __init__(self, meta: Metainfo, target: str) -> None:
        self.target = os.path.abspath(target)
        super().__init__(meta, self.target + PART_SUFFIX, writable=True)
        self.finalized = False
        self.target_complete = False

    def _check_target_parent(self) -> None:
        parent = os.path.dirname(self.target)
        if not os.path.isdir(parent):
            raise StorageError(parent, "destination directory does not exist")
        if not os.access(parent, os.W_OK):
            raise StorageError(parent, "permission denied")

    def _refuse_links(self) -> None:
        """Never write through a symlink planted at the target or inside it."""
        for path in (self.target, self.root):
            if os.path.islink(path):
                raise StorageError(path, "is a symbolic link; refusing to write through it")
        if self.meta.multi_file:
            for i in range(len(self.meta.files)):
                path = self.file_path(i)
                rel = os.path.relpath(path, self.root)
                probe = self.root
                for part in rel.split(os.sep):
                    probe = os.path.join(probe, part)
                    if os.path.islink(probe):
                        raise StorageError(probe, "is a symbolic link; refusing to write through it")

    def prepare(self) -> Bitfield:
        """Resume: verify what is already at the target and in ``.part``.

        Blocking (hashing); run it in a thread.  Returns the pieces present.
        If the target already holds the complete verified payload, the result
        is full and :attr:`target_complete` is set; nothing is copied.
        """
        self._check_target_parent()
        self._refuse_links()
        self.target_complete = False
        existing = None
        if _exists(self.target) and not os.path.islink(self.target):
            existing = PieceStorage(self.meta, self.target, writable=False)
            try:
                if all(os.path.exists(existing.file_path(i)) for i in range(len(self.meta.files))):
                    found = existing.verify()
                    if found.complete and self._sizes_match(existing):
                        self.target_complete = True
                        existing.close()
                        # Seed from the target itself: no .part is ever made.
                        self.root = self.target
                        self.writable = False
                        return found
                else:
                    found = Bitfield(self.meta.num_pieces)
            except StorageError:
                found = Bitfield(self.meta.num_pieces)
        else:
            found = Bitfield(self.meta.num_pieces)
        have = self.verify() if _exists(self.root) else Bitfield(self.meta.num_pieces)
        self.preallocate()
        if existing is not None:
            # Reuse verified pieces of an older copy at the target (legacy
            # behaviour: re-check data already at <saveas>) without touching it.
            for index in found:
                if index not in have:
                    self.write_piece(index, existing.read_piece(index))
                    have.add(index)
            existing.close()
        return have

    def _sizes_match(self, storage: PieceStorage) -> bool:
        for i, entry in enumerate(self.meta.files):
            try:
                if os.path.getsize(storage.file_path(i)) != entry.length:
                    return False
            except OSError:
                return False
        return True

    def finalize(self) -> None:
        """fsync and rename ``.part`` over the target: all or nothing."""
        if self.finalized:
            return
        if self.target_complete:
            self.finalized = True
            return
        self.sync()
        try:
            if self.meta.multi_file and os.path.isdir(self.target) and not os.path.islink(self.target):
                aside = self.target + ".old"
                if _exists(aside):
                    shutil.rmtree(aside, ignore_errors=True)
                os.rename(self.target, aside)
                os.rename(self.root, self.target)
                shutil.rmtree(aside, ignore_errors=True)
            else:
                os.replace(self.root, self.target)
            dirfd = os.open(os.path.dirname(self.target), os.O_RDONLY)
            try:
                os.fsync(dirfd)
            finally:
                os.close(dirfd)
        except OSError as e:
            raise _storage_error(self.target, e) from None
        # Descriptors stay valid after the rename; later reads serve the final
        # file.  A descriptor reopened later (after close(), while the last
        # uploads drain at shutdown) must open the target read-only: opening
        # the old .part path with O_CREAT left an empty .part beside the
        # payload (found by bench/chaos.py, seed 103).
        self.root = self.target
        self.writable = False
        self.finalized = True

    def discard(self) -> None:
        """Remove the partial download (on a fatal error)."""
        self.close()
        if self.finalized or self.target_complete or not _exists(self.root):
            return
        if os.path.isdir(self.root) and not os.path.islink(self.root):
            shutil.rmtree(self.root, ignore_errors=True)
        else:
            try:
                os.unlink(self.root)
            except OSError:
                pass


class SeedStorage(PieceStorage):
    """Read-only storage over a complete payload the seeder serves."""

    def __init__(self, meta: Metainfo, path: str) -> None:
        super().__init__(meta, os.path.abspath(path), writable=False)

    def check(self) -> None:
        """Raise :class:`PayloadError` unless every file exists with its size."""
        for i, entry in enumerate(self.meta.files):
            path = self.file_path(i)
            try:
                size = os.path.getsize(path)
            except OSError as e:
                raise PayloadError(path, e.strerror or "cannot be read") from None
            if size != entry.length:
                raise PayloadError(path, f"{size} bytes, the torrent says {entry.length}")

    def verify_all(self) -> None:
        self.check()
        have = self.verify()
        if not have.complete:
            bad = next(have.missing())
            raise PayloadError(self.root, f"piece {bad} fails its hash "
                               f"({self.meta.num_pieces - have.count} bad pieces)")


class PieceWriter:
    """Verify (SHA-1) and write whole pieces in a thread pool, off the reactor.

    Why: a peer downloading at loopback or datacenter-NIC rates spends a
    large share of its one reactor thread hashing and writing pieces
    (bench/README.md, "Loopback pair").  ``hashlib`` releases the GIL while
    it hashes more than 2 KiB and ``os.pwrite`` while it writes, so a worker
    thread does both in parallel with the reactor reading the next blocks.

    Usage from the swarm core (reactor thread only)::

        d = writer.submit(piece.index, piece.buffer)   # hand the buffer over
        d.addCallback(lambda ok: ok and mark_have(...) or piece_failed(...))
        d.addErrback(fail_on_storage_error)
        ...
        if writer.full: stop issuing new requests until a submit fires
        await writer.drain()   # before finalize(): every write has landed

    ``submit`` fires with True (hash matched, piece written), False (hash
    mismatch: nothing written) or fails with :class:`StorageError`.  The
    caller must not mutate ``data`` until then.  Results fire on the reactor
    thread, in completion order (pieces are independent).  ``reactor`` and
    ``threadpool`` are injected so tests can run it in memory.
    """

    def __init__(self, storage: PieceStorage, hashes: Sequence[bytes], *,
                 reactor: Any = None, threadpool: Any = None,
                 max_pending_bytes: int = 64 * 2**20) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor
            reactor = default_reactor
        if threadpool is None:
            threadpool = reactor.getThreadPool()
        self._storage = storage
        self._hashes = hashes
        self._reactor = reactor
        self._pool = threadpool
        self.max_pending_bytes = max_pending_bytes
        self.pending_bytes = 0
        self.pending = 0
        self._drain_waiters: list[Deferred] = []

    @property
    def full(self) -> bool:
        """True while the pieces handed over but not yet written reach the bound:
        the caller should stop requesting (back-pressure instead of memory)."""
        return self.pending_bytes >= self.max_pending_bytes

    def submit(self, index: int, data: bytes | bytearray | memoryview) -> "Deferred[bool]":
        """Hash ``data`` against piece ``index``'s SHA-1 and write it if it matches."""
        from twisted.internet.threads import deferToThreadPool

        size = len(data)
        self.pending_bytes += size
        self.pending += 1
        d = deferToThreadPool(self._reactor, self._pool, self._verify_and_write, index, data)
        d.addBoth(self._settled, size)
        return d

    def _verify_and_write(self, index: int, data: bytes | bytearray | memoryview) -> bool:
        """Runs in a worker thread: no reactor or session state is touched here."""
        if hashlib.sha1(data).digest() != self._hashes[index]:
            return False
        self._storage.write_piece(index, data)
        return True

    def _settled(self, result: Any, size: int) -> Any:
        self.pending_bytes -= size
        self.pending -= 1
        if not self.pending:
            waiters, self._drain_waiters = self._drain_waiters, []
            for w in waiters:
                w.callback(None)
        return result

    def drain(self) -> "Deferred[None]":
        """Fires once nothing is pending (at once if nothing is)."""
        from twisted.internet.defer import Deferred, succeed

        if not self.pending:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._drain_waiters.append(d)
        return d
