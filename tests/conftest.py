"""Generic fixtures and helpers shared by the whole test suite.

Keep this file small: only helpers every area needs.  Import the plain
helpers with ``from conftest import free_port, venv_bin`` (pytest puts
``tests/`` on ``sys.path`` because it has no ``__init__.py``).

- ``tmp_payload`` (fixture): factory building a payload file or directory
  tree under the test's ``tmp_path``; see :func:`tmp_payload`.
- ``small_torrent`` (fixture): the path of a one-piece torrent file, for
  tests of command-line options that need a ``--torrent``.
- :func:`free_port`: a TCP port on 127.0.0.1 that was free a moment ago.
- :func:`venv_bin`: path of a console script (``murder``, ``twistd`` …)
  installed beside the running interpreter, so subprocesses use the same
  virtualenv as the tests.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Callable, Mapping, Union

import pytest

#: A payload spec: ``bytes`` for a single file, or a mapping of relative
#: POSIX paths ("dir/sub/file") to file contents for a directory tree.
PayloadSpec = Union[bytes, Mapping[str, bytes]]


def _deaf(signum: int, frame: object) -> None:
    """Stands in for an ignored signal in the pytest process (see below)."""


def pytest_configure(config: pytest.Config) -> None:
    """Every process the tests start gets SIGINT and SIGHUP at their defaults.

    Launched under ``nohup`` (SIGHUP ignored) or as a background job of a
    script (SIGINT ignored), pytest would pass those ignored signals through
    exec to every child: murder then honours the ignored SIGHUP (the legacy
    shim's detached seeder relies on that) and Twisted leaves an ignored
    SIGINT alone, so the tests that stop a server with either signal would
    wait for a process that cannot hear it.  A handler that does nothing
    keeps pytest itself as deaf as it was launched, and exec resets a handler
    (unlike an ignore) to the default.
    """
    for sig in (signal.SIGINT, signal.SIGHUP):
        if signal.getsignal(sig) is signal.SIG_IGN:
            signal.signal(sig, _deaf)


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that was free on ``host`` when asked.

    The socket is closed before returning, so another process could take the
    port in between; tests that start servers should still bound their waits.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM,
                 timeout: float = 10.0) -> int | None:
    """Send ``sig`` to ``proc`` by PID, wait, SIGKILL by PID if it hangs."""
    if proc.poll() is None:
        try:
            os.kill(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)
    return proc.returncode


def sha256_file(path: Path | str) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks (payloads can be large)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(2**20), b""):
            h.update(chunk)
    return h.hexdigest()


def venv_bin(name: str) -> str:
    """Path of console script ``name`` in the running interpreter's bin dir.

    Uses ``sys.executable`` unresolved (a venv's python is a symlink whose
    target lives outside the venv).  Raises ``FileNotFoundError`` if the
    script is not installed, so a missing entry point fails loudly.
    """
    path = Path(sys.executable).parent / name
    if not path.exists():
        raise FileNotFoundError(f"{name} is not installed in {path.parent}")
    return str(path)


def make_payload(root: Path, name: str, spec: PayloadSpec) -> Path:
    """Create ``root/name`` from ``spec`` (see :data:`PayloadSpec`); return its path."""
    target = root / name
    if isinstance(spec, (bytes, bytearray)):
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(bytes(spec))
        return target
    target.mkdir(parents=True, exist_ok=True)
    for rel, data in spec.items():
        path = target.joinpath(*rel.split("/"))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return target


@pytest.fixture
def tmp_payload(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``tmp_payload(spec, name="payload", parent=None) -> Path``.

    ``spec`` is ``bytes`` (one file) or ``{"a/b.txt": b"..."}`` (a directory
    tree).  The payload is created under ``tmp_path`` (or ``tmp_path/parent``
    when given, so two payloads can share a basename).
    """

    def factory(spec: PayloadSpec, name: str = "payload", parent: str | None = None) -> Path:
        root = tmp_path / parent if parent else tmp_path
        return make_payload(root, name, spec)

    return factory


@pytest.fixture
def small_torrent(tmp_path: Path) -> str:
    """A one-piece (32 KiB) torrent written to ``tmp_path/t.torrent``; its path."""
    from murder.testing import build_torrent, pattern

    meta, _ = build_torrent(pattern(2**15), piece_length=2**15)
    path = tmp_path / "t.torrent"
    path.write_bytes(meta.encode())
    return str(path)


_INTEGRATION = Path(__file__).resolve().parent / "integration"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Everything under tests/integration/ starts real processes: mark it so.

    The directory is the one place that decides; ``-m "not integration"``
    and ``tests/unit`` then select the same tests.
    """
    for item in items:
        if _INTEGRATION in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.integration)
