"""The installed `murder make-torrent` console script in a real process.

Real exit codes, the terminal-only progress display and that hashing streams
the payload; the command's behaviour in detail is tested in process by its
twin, ``tests/unit/test_make_torrent_cli.py``.
"""

from __future__ import annotations

import hashlib
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import venv_bin
from murder import metainfo
from twins import ANNOUNCE, make_torrent_summary


def _run(*args: str, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([venv_bin("murder"), "make-torrent", *args], capture_output=True,
                          text=True, timeout=timeout, **kw)


@pytest.mark.integration
class InstalledCommandTests:
    """The installed `murder` console script in a real process."""

    def test_exit_codes(self, tmp_path: Path, tmp_payload) -> None:
        """0 on success, 1 for a missing path, 2 for wrong arguments."""
        path = tmp_payload(b"payload")
        ok = _run("--announce", ANNOUNCE, str(path))
        assert (ok.returncode, ok.stderr) == (0, "")
        assert ok.stdout == make_torrent_summary(str(path) + ".torrent")
        missing = _run("--announce", ANNOUNCE, str(tmp_path / "nope"))
        assert missing.returncode == 1
        assert missing.stderr.count("\n") == 1
        wrong = _run("--announce", ANNOUNCE)
        assert wrong.returncode == 2
        assert "Traceback" not in wrong.stderr

    def test_unwritable_output_one_line(self, tmp_path: Path, tmp_payload) -> None:
        """An output path in a missing directory: exit 1 and a single error line."""
        path = tmp_payload(b"payload")
        out = tmp_path / "no" / "dir" / "x.torrent"
        r = _run("--announce", ANNOUNCE, "-o", str(out), str(path))
        assert r.returncode == 1
        assert r.stderr == f"murder make-torrent: storage error at {out}: No such file or directory\n"
        assert r.stdout == ""

    def test_python_dash_m_murder(self, tmp_payload) -> None:
        """`python -m murder make-torrent` is the same command."""
        path = tmp_payload(b"payload")
        r = subprocess.run([sys.executable, "-m", "murder", "make-torrent", "--announce", ANNOUNCE,
                            str(path)], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert r.stdout == make_torrent_summary(str(path) + ".torrent")

    def _run_on_pty(self, *args: str) -> tuple[int, bytes]:
        """Run make-torrent with stderr on a pseudo-terminal; return (rc, terminal bytes)."""
        master, slave = pty.openpty()
        proc = subprocess.Popen([venv_bin("murder"), "make-torrent", *args],
                                stdout=subprocess.DEVNULL, stderr=slave, stdin=subprocess.DEVNULL)
        os.close(slave)
        seen = b""
        deadline = time.monotonic() + 60
        try:
            while time.monotonic() < deadline:
                ready, _, _ = select.select([master], [], [], 1)
                if not ready:
                    if proc.poll() is not None:
                        break
                    continue
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                seen += chunk
            return proc.wait(timeout=max(1, deadline - time.monotonic())), seen
        finally:
            os.close(master)
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    def test_progress_on_a_tty(self, tmp_payload) -> None:
        """With stderr on a terminal the hashing progress is drawn and reaches 100%."""
        path = tmp_payload(os.urandom(2**20))
        rc, seen = self._run_on_pty("--announce", ANNOUNCE, "-p", "16384", str(path))
        assert rc == 0
        assert seen.count(b"\rhashing") >= 2
        assert b"100.0%" in seen

    def test_quiet_on_a_tty(self, tmp_payload) -> None:
        """--quiet suppresses the progress even on a terminal."""
        path = tmp_payload(os.urandom(2**20))
        rc, seen = self._run_on_pty("--quiet", "--announce", ANNOUNCE, "-p", "16384", str(path))
        assert rc == 0
        assert b"hashing" not in seen

    @staticmethod
    def _peak_rss_kib(*args: str) -> int:
        """Peak RSS (KiB) of one make-torrent process, from wait4() on its pid."""
        proc = subprocess.Popen([venv_bin("murder"), "make-torrent", "--quiet", *args],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                pytest.fail("make-torrent took more than 120 s")
            time.sleep(0.05)
        proc.returncode = os.waitstatus_to_exitcode(status)
        err = proc.stderr.read().decode()
        proc.stderr.close()
        assert proc.returncode == 0, err
        return usage.ru_maxrss

    def test_hashing_streams_large_sparse_file(self, tmp_path: Path) -> None:
        """A 1 GiB payload costs well under 100 MiB of extra memory (it is streamed)."""
        small = tmp_path / "small"
        small.write_bytes(b"x")
        big = tmp_path / "big"
        with open(big, "wb") as f:
            f.truncate(2**30)
        baseline = self._peak_rss_kib("--announce", ANNOUNCE, "-o", str(tmp_path / "s.t"), str(small))
        started = time.monotonic()
        peak = self._peak_rss_kib("--announce", ANNOUNCE, "-o", str(tmp_path / "b.t"), str(big))
        elapsed = time.monotonic() - started
        growth_mib = (peak - baseline) / 1024
        print(f"\nmake-torrent 1 GiB sparse: peak RSS {peak / 1024:.1f} MiB, baseline "
              f"{baseline / 1024:.1f} MiB, growth {growth_mib:.1f} MiB, {elapsed:.1f} s")
        assert growth_mib < 100
        m = metainfo.load(str(tmp_path / "b.t"))
        assert m.total_length == 2**30
        assert m.piece_length == 2**20  # auto: 1024 pieces of 1 MiB
        zero_piece = hashlib.sha1(bytes(2**20)).digest()
        assert m.pieces == (zero_piece,) * 1024
