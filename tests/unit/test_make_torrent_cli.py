"""`murder make-torrent` in process (through ``murder.cli.main``) and metainfo.write_atomic.

The installed console script in a real process (exit codes, the
terminal-only progress display, streaming hashing) is tested by its twin,
``tests/integration/test_make_torrent_installed.py``.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest

from murder import cli, metainfo
from murder.errors import StorageError
from twins import ANNOUNCE, make_torrent_summary


def _leftovers(directory: Path) -> list[str]:
    """Temporary files write_atomic could have left behind."""
    return sorted(p.name for p in directory.iterdir() if "tmp" in p.name)


class MakeTorrentCommandTests:
    """`murder make-torrent` run in-process through cli.main."""

    def test_success_line_and_file(self, tmp_path: Path, tmp_payload, capsys) -> None:
        """Exit 0, one summary line on stdout, nothing on stderr, a valid torrent written."""
        data = os.urandom(700_000)
        path = tmp_payload(data, name="rel.tgz")
        out = str(tmp_path / "out.torrent")
        assert cli.main(["make-torrent", "--announce", ANNOUNCE, "-o", out, str(path)]) == 0
        captured = capsys.readouterr()
        assert captured.out == make_torrent_summary(out)
        assert captured.err == ""
        m = metainfo.load(out)
        assert (m.name, m.total_length, m.announce) == ("rel.tgz", len(data), ANNOUNCE)
        assert m.piece_length == 2**17  # auto sizing for a small payload
        assert m.pieces[0] == hashlib.sha1(data[:2**17]).digest()

    def test_default_output_next_to_file(self, tmp_payload, capsys) -> None:
        """Without -o the torrent is PATH.torrent."""
        path = tmp_payload(b"payload", name="rel.tgz")
        assert cli.main(["make-torrent", "--announce", ANNOUNCE, str(path)]) == 0
        out = str(path) + ".torrent"
        assert capsys.readouterr().out == make_torrent_summary(out)

    def test_default_output_for_directory_with_slash(self, tmp_payload, capsys) -> None:
        """A directory given as DIR/ gets DIR.torrent beside it, not DIR/.torrent."""
        path = tmp_payload({"a": b"1", "b/c": b"2"}, name="tree")
        assert cli.main(["make-torrent", "--announce", ANNOUNCE, str(path) + "/"]) == 0
        m = metainfo.load(str(path) + ".torrent")
        assert m.multi_file and m.name == "tree"
        assert not (path / ".torrent").exists()
        capsys.readouterr()

    def test_options(self, tmp_path: Path, tmp_payload, capsys) -> None:
        """--piece-length, --comment, --private and repeated --announce-list are stored."""
        path = tmp_payload(os.urandom(100_000))
        out = str(tmp_path / "o.torrent")
        rc = cli.main(["make-torrent", "--announce", ANNOUNCE, "-o", out, "--piece-length", "16384",
                       "--comment", "release 7", "--private",
                       "--announce-list", "http://b1/announce,http://b2/announce",
                       "--announce-list", "http://c/announce", str(path)])
        assert rc == 0
        m = metainfo.load(out)
        assert m.piece_length == 16384
        assert m.num_pieces == 7
        assert m.comment == "release 7"
        assert m.private is True
        assert m.announce_list == ((ANNOUNCE,), ("http://b1/announce", "http://b2/announce"),
                                   ("http://c/announce",))
        assert m.trackers == (ANNOUNCE, "http://b1/announce", "http://b2/announce",
                              "http://c/announce")
        capsys.readouterr()

    def test_missing_path_exit_1(self, tmp_path: Path, capsys) -> None:
        """A missing payload: exit 1, one line on stderr, no torrent written."""
        missing = tmp_path / "nope"
        assert cli.main(["make-torrent", "--announce", ANNOUNCE, str(missing)]) == 1
        captured = capsys.readouterr()
        assert captured.out == ""
        assert captured.err == (
            f"murder make-torrent: cannot make a torrent of {missing}: no such file or directory\n")
        assert list(tmp_path.iterdir()) == []

    @pytest.mark.parametrize("length", ["1000", "8192", "0"])
    def test_bad_piece_length_exit_1(self, tmp_payload, capsys, length: str) -> None:
        """A piece length that is not a power of two >= 16 KiB: exit 1 with the reason."""
        path = tmp_payload(b"payload")
        assert cli.main(["make-torrent", "--announce", ANNOUNCE, "-p", length, str(path)]) == 1
        assert capsys.readouterr().err == (
            f"murder make-torrent: cannot make a torrent of {path}: piece length {length} "
            f"is not a power of two >= 16384\n")
        assert not Path(str(path) + ".torrent").exists()

    def test_empty_payload_exit_1(self, tmp_payload, capsys) -> None:
        """An empty file: exit 1, 'payload is empty'."""
        path = tmp_payload(b"")
        assert cli.main(["make-torrent", "--announce", ANNOUNCE, str(path)]) == 1
        assert capsys.readouterr().err == (
            f"murder make-torrent: cannot make a torrent of {path}: payload is empty\n")

    @pytest.mark.parametrize("args, message", [
        ([], "Wrong number of arguments."),
        (["a", "b"], "Wrong number of arguments."),
        (["--piece-length", "big", "P"], None),
        (["--no-such-option", "P"], "option --no-such-option not recognized"),
    ])
    def test_usage_errors_exit_2(self, tmp_payload, capsys, args, message) -> None:
        """Wrong arguments: exit 2, the reason and a --help hint on stderr."""
        path = tmp_payload(b"payload")
        args = [str(path) if a == "P" else a for a in args]
        assert cli.main(["make-torrent", "--announce", ANNOUNCE, *args]) == 2
        err = capsys.readouterr().err.splitlines()
        assert err[0].startswith("murder make-torrent: ")
        if message:
            assert err[0] == f"murder make-torrent: {message}"
        assert err[1] == "Run `murder make-torrent --help` for usage."
        assert not Path(str(path) + ".torrent").exists()

    def test_missing_announce_exit_2(self, tmp_payload, capsys) -> None:
        """--announce is required."""
        path = tmp_payload(b"payload")
        assert cli.main(["make-torrent", str(path)]) == 2
        assert capsys.readouterr().err.splitlines()[0] == \
            "murder make-torrent: --announce URL is required"

    def test_quiet_and_non_tty_show_no_progress(self, tmp_payload, capsys) -> None:
        """stderr is not a terminal under capsys: no progress output at all."""
        path = tmp_payload(os.urandom(2**19))
        assert cli.main(["make-torrent", "--announce", ANNOUNCE, "-p", "16384", str(path)]) == 0
        assert capsys.readouterr().err == ""

    def test_replaces_existing_output_atomically(self, tmp_path: Path, tmp_payload, capsys) -> None:
        """An existing torrent is replaced by rename: a hard link to it keeps the old bytes."""
        out = tmp_path / "out.torrent"
        out.write_bytes(b"old torrent bytes")
        keep = tmp_path / "old-link"
        os.link(out, keep)
        path = tmp_payload(b"new payload", name="p")
        assert cli.main(["make-torrent", "--announce", ANNOUNCE, "-o", str(out), str(path)]) == 0
        assert keep.read_bytes() == b"old torrent bytes"
        assert metainfo.load(str(out)).name == "p"
        assert os.stat(out).st_ino != os.stat(keep).st_ino
        assert _leftovers(tmp_path) == []
        capsys.readouterr()

    def test_output_mode_follows_umask(self, tmp_path: Path, tmp_payload, capsys) -> None:
        """The torrent gets the usual 0666 & ~umask mode, readable by other deploy users."""
        path = tmp_payload(b"payload")
        out = tmp_path / "o.torrent"
        old = os.umask(0o022)
        try:
            assert cli.main(["make-torrent", "--announce", ANNOUNCE, "-o", str(out), str(path)]) == 0
        finally:
            os.umask(old)
        capsys.readouterr()
        assert out.stat().st_mode & 0o777 == 0o644


class ProgressPrinterTests:
    """The progress callback is drawn only on a terminal."""

    class _Stream(io.StringIO):
        def __init__(self, tty: bool) -> None:
            super().__init__()
            self._tty = tty

        def isatty(self) -> bool:
            return self._tty

    def test_no_callback_when_not_a_tty(self) -> None:
        """Pipes and files get no progress callback at all."""
        assert cli._progress_printer(self._Stream(tty=False)) is None

    def test_draws_one_updating_line_on_a_tty(self) -> None:
        """Each update rewrites the line (\\r); the last one ends it with a newline."""
        stream = self._Stream(tty=True)
        show = cli._progress_printer(stream)
        assert show is not None
        total = 3 * 2**20
        show(2**20, total)
        first = stream.getvalue()
        assert first.startswith("\rhashing") and "\n" not in first
        assert "33.3%" in first
        show(total, total)
        text = stream.getvalue()
        assert text.count("\r") == 2
        assert text.endswith("100.0%\n")
        assert "3.0 MiB" in text


class WriteAtomicTests:
    """metainfo.write_atomic: all or nothing, no temp file left."""

    def test_writes_and_leaves_nothing(self, tmp_path: Path) -> None:
        """The data lands at the path; no temporary file remains."""
        out = tmp_path / "x.torrent"
        metainfo.write_atomic(str(out), b"data")
        assert out.read_bytes() == b"data"
        assert _leftovers(tmp_path) == []

    def test_failure_keeps_old_file(self, tmp_path: Path, monkeypatch) -> None:
        """If writing fails midway the old file is intact and the temp file is removed."""
        out = tmp_path / "x.torrent"
        out.write_bytes(b"old")

        def broken_fsync(fd: int) -> None:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(os, "fsync", broken_fsync)
        with pytest.raises(StorageError) as e:
            metainfo.write_atomic(str(out), b"new data")
        assert str(e.value) == f"storage error at {out}: No space left on device"
        monkeypatch.undo()
        assert out.read_bytes() == b"old"
        assert _leftovers(tmp_path) == []
        assert sorted(p.name for p in tmp_path.iterdir()) == ["x.torrent"]
