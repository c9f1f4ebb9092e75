"""Bugs found by the chaos runner (bench/chaos.py), as small deterministic tests.

Each test names the seed that found the bug and what the run showed.
"""

from __future__ import annotations

import os
from pathlib import Path


from murder.errors import StorageError
from murder.peer.storage import DownloadStorage
from murder.testing import build_torrent

CHAOS = Path(__file__).resolve().parents[2] / "bench" / "chaos.py"


class StorageAfterFinalizeTests:
    """Seed 103 (15 peers): a peer logged "complete", then "storage error at
    payload.bin.part: file is shorter than the torrent says", and a stray
    empty ``payload.bin.part`` sat beside the verified payload.  An upload
    read after ``storage.close()`` (connections drain at shutdown) reopened
    the old ``.part`` path with O_CREAT."""

    def test_read_after_finalize_and_close_serves_the_target(self, tmp_path: Path) -> None:
        """After finalize and close, a block read serves the final file and
        creates nothing beside it."""
        payload = bytes(range(256)) * 500
        meta, _ = build_torrent(payload, name="p.bin", piece_length=2**15)
        st = DownloadStorage(meta, str(tmp_path / meta.name))
        st.prepare()
        for i in range(meta.num_pieces):
            st.write_piece(i, payload[i * 2**15:i * 2**15 + meta.piece_size(i)])
        st.finalize()
        st.close()
        try:
            block = st.read_block(1, 0, 2**14)
        except StorageError:
            block = None  # refusing is acceptable; creating a file is not
        assert os.listdir(tmp_path) == [meta.name]
        assert block in (None, payload[2**15:2**15 + 2**14])
        assert (tmp_path / meta.name).read_bytes() == payload
