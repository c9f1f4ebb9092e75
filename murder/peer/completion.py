"""A fully received piece becomes a verified piece on disk, or is asked for again.

Why its own room: the hash and the write happen either inline (the default)
or on a :class:`~murder.peer.interfaces.PieceSink`'s worker threads
(``--hash-threads``), whose answer arrives later on the reactor thread.  Both
paths end in one place, :meth:`Completion.checked`, so the rest of the core
sees only three outcomes: a piece verified (``verified(index)``), a piece to
request again (the picker is told here), or a fatal storage error
(``fail(error)``).  Who sent a bad block is :class:`~murder.peer.blame.Blame`'s
question; banning them is the caller's (``ban``).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from twisted.logger import Logger

from murder.errors import MurderError, StorageError
from murder.peer.blame import Blame
from murder.peer.interfaces import PeerLink, PieceSink, PieceStore
from murder.peer.picker import PieceInProgress, Picker


class Completion:
    """Hash, write and blame for one torrent's pieces."""

    log = Logger()

    def __init__(self, piece_hashes: Sequence[bytes], picker: Picker, storage: PieceStore,
                 writer: PieceSink | None, *, verified: Callable[[int], None],
                 ban: Callable[[PeerLink, str], None], fail: Callable[[MurderError], None],
                 resume: Callable[[], None], active: Callable[[], bool]) -> None:
        self.picker = picker
        self.storage = storage
        #: Hashes and writes off this thread (``--hash-threads``); None: inline.
        self.writer = writer
        self.blame = Blame(piece_hashes)
        self._verified = verified
        self._ban = ban
        self._fail = fail
        self._resume = resume
        self._active = active
        self.hash_failures = 0
        #: Bytes of pieces that failed their hash.
        self.wasted = 0
        #: Requests are held: the writer was full when a block arrived.
        self.held = False

    @property
    def full(self) -> bool:
        """The writer's threads are behind: request nothing more for now."""
        return self.writer is not None and self.writer.full

    def submit(self, piece: PieceInProgress) -> None:
        """Every block of ``piece`` has arrived: check it (now or on a worker thread)."""
        if self.writer is None:
            verified, liars = self.blame.check(piece)
            self.checked(piece, verified, liars)
            return
        # The piece stays in progress (every block received, so nothing of it
        # is requested again) until the worker thread has hashed and written it.
        d = self.writer.submit(piece.index, piece.buffer)
        d.addCallbacks(self._hashed, self._write_failed, callbackArgs=(piece,))
        d.addErrback(lambda f: self.log.failure("piece {index} completion", f,
                                                index=piece.index))

    def _hashed(self, verified: bool, piece: PieceInProgress) -> None:
        """The writer's answer for ``piece``: on the reactor thread, written if verified."""
        if not self._active():
            return
        checked, liars = self.blame.verdict(piece, verified)
        self.checked(piece, checked, liars, written=True)
        if (self.held or not checked) and self._active() and not self.full:
            # Requests were held while the writer was full, or a failed piece
            # is requestable again: refill every pipeline.
            self.held = False
            self._resume()

    def _write_failed(self, failure: Any) -> None:
        failure.trap(StorageError)
        if self._active():
            self._fail(failure.value)

    def checked(self, piece: PieceInProgress, verified: bool,
                liars: list[tuple[Any, str]], written: bool = False) -> None:
        """The one end of both paths: ban liars; write (unless the writer did) and report."""
        if not verified:
            self.hash_failures += 1
            self.wasted += piece.size
            self.picker.piece_failed(piece)
            self.log.warn("piece {index} failed its hash (sources {sources})",
                          index=piece.index, sources=[c.address for c in piece.sources])
        for liar, why in liars:
            self._ban(liar.link, why)
        if not verified:
            return
        if not written:
            try:
                self.storage.write_piece(piece.index, piece.buffer)
            except StorageError as e:
                self._fail(e)
                return
        self._verified(piece.index)


__all__ = ["Completion"]
