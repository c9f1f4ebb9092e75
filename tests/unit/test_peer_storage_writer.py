"""Unit tests for murder.peer.storage.PieceWriter: verify + write pieces off the reactor."""

from __future__ import annotations

import queue
import threading

import pytest
from twisted.python.threadpool import ThreadPool

from murder.errors import StorageError
from murder.peer.storage import DownloadStorage, PieceWriter
from murder.testing import build_torrent
from murder.testing import pattern as payload, ManualPool, InlineReactor

PLEN = 2**15


class QueueReactor:
    """callFromThread hands the call to the test's thread through a queue."""

    def __init__(self) -> None:
        self.queue: queue.Queue = queue.Queue()

    def callFromThread(self, f, *args, **kwargs):  # noqa: N802
        self.queue.put((f, args, kwargs))

    def run_one(self, timeout: float = 10.0) -> None:
        f, args, kwargs = self.queue.get(timeout=timeout)
        f(*args, **kwargs)


def results_of(d) -> list:
    out: list = []
    d.addBoth(out.append)
    return out


@pytest.fixture
def download(tmp_path):
    meta, data = build_torrent(payload(3 * PLEN + 100), name="p.bin", piece_length=PLEN)
    storage = DownloadStorage(meta, str(tmp_path / "p.bin"))
    storage.prepare()
    yield meta, data, storage
    storage.close()


def piece(meta, data: bytes, index: int) -> bytes:
    return data[index * meta.piece_length:index * meta.piece_length + meta.piece_size(index)]


class PieceWriterTests:
    """Hashing and writing happen in the pool; results come back on the reactor."""

    def test_good_piece_is_written_in_the_pool(self, download):
        """Nothing is hashed or written at submit; once the pool runs, the piece
        is on disk and the Deferred fires True."""
        meta, data, storage = download
        pool = ManualPool()
        writer = PieceWriter(storage, meta.pieces, reactor=InlineReactor(), threadpool=pool)
        out = results_of(writer.submit(1, bytearray(piece(meta, data, 1))))
        assert out == [] and len(pool.calls) == 1
        assert storage.read_piece(1) != piece(meta, data, 1)  # preallocated zeros
        pool.run_all()
        assert out == [True]
        assert storage.read_piece(1) == piece(meta, data, 1)

    def test_bad_piece_is_not_written(self, download):
        """A piece failing its SHA-1 fires False and leaves the disk untouched."""
        meta, data, storage = download
        pool = ManualPool()
        writer = PieceWriter(storage, meta.pieces, reactor=InlineReactor(), threadpool=pool)
        bad = bytearray(piece(meta, data, 0))
        bad[5] ^= 0xFF
        out = results_of(writer.submit(0, bad))
        pool.run_all()
        assert out == [False]
        assert storage.read_piece(0) == bytes(meta.piece_size(0))

    def test_storage_error_is_an_errback(self, download):
        """A write that fails (here: the storage is read-only) fails the Deferred
        with StorageError instead of raising in the pool."""
        meta, data, storage = download
        storage.close()
        storage.writable = False
        pool = ManualPool()
        writer = PieceWriter(storage, meta.pieces, reactor=InlineReactor(), threadpool=pool)
        out = results_of(writer.submit(2, piece(meta, data, 2)))
        pool.run_all()
        assert len(out) == 1 and out[0].check(StorageError)

    def test_pending_bytes_back_pressure_and_drain(self, download):
        """pending_bytes counts handed-over pieces, ``full`` trips at the bound,
        and drain() fires only when every write has settled."""
        meta, data, storage = download
        pool = ManualPool()
        writer = PieceWriter(storage, meta.pieces, reactor=InlineReactor(), threadpool=pool,
                             max_pending_bytes=2 * PLEN)
        assert results_of(writer.drain()) == [None]
        writer.submit(0, piece(meta, data, 0))
        assert writer.pending_bytes == PLEN and not writer.full
        writer.submit(3, piece(meta, data, 3))
        assert writer.pending_bytes == PLEN + 100 and not writer.full
        writer.submit(1, piece(meta, data, 1))
        assert writer.full and writer.pending == 3
        drained = results_of(writer.drain())
        assert drained == []
        pool.run_all()
        assert drained == [None]
        assert writer.pending_bytes == 0 and not writer.full

    def test_real_thread_pool(self, download):
        """With a real ThreadPool the hash and the write run on a worker thread,
        not on the caller's (reactor) thread, and every piece lands intact."""
        meta, data, storage = download
        threads: set[int] = set()
        write = storage.write_piece

        def recording_write(index, buf):
            threads.add(threading.get_ident())
            write(index, buf)

        storage.write_piece = recording_write  # type: ignore[method-assign]
        pool = ThreadPool(minthreads=2, maxthreads=2, name="test-writer")
        pool.start()
        try:
            reactor = QueueReactor()
            writer = PieceWriter(storage, meta.pieces, reactor=reactor, threadpool=pool)
            outs = [results_of(writer.submit(i, piece(meta, data, i)))
                    for i in range(meta.num_pieces)]
            for _ in range(meta.num_pieces):
                reactor.run_one()
        finally:
            pool.stop()
        assert [o for o in outs] == [[True]] * meta.num_pieces
        assert threads and threading.get_ident() not in threads
        storage.finalize()
        with open(storage.target, "rb") as f:
            assert f.read() == data
