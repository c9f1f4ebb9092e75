"""The code behind the three legacy Capistrano scripts of this folder.

The ``murder`` Ruby gem copies this ``dist/`` folder to every host and runs
``python <dist>/murder_tracker.py``, ``murder_make_torrent.py`` and
``murder_client.py`` with the arguments of the 2010 BitTornado scripts.  The
three launchers only check the interpreter and call into this module, which
translates the legacy arguments onto the installed ``murder`` package: no
BitTorrent logic lives here.

Differences from the original, on purpose (see README.md): every real failure
exits non-zero with a one-line reason, no partial file is ever left at the
``<saveas>`` path, the ``<ip>`` argument may be empty or missing, and the
peer's lingering seeder ignores SIGHUP.
"""

from __future__ import annotations

import io
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
from typing import Sequence
from urllib.parse import urlsplit

#: Printed (with the script name in front) when ``import murder`` fails.
NOT_INSTALLED = ("the murder package is not installed "
                 "(pip install murder / see contrib/capistrano_compat/README.md)")

#: Set in the environment of the detached peer worker; holds its status fd.
WORKER_ENV = "MURDER_COMPAT_STATUS_FD"
#: Seconds the peer worker may go without any tracker answer (legacy: forever).
TRACKER_TIMEOUT_ENV = "MURDER_TRACKER_TIMEOUT"
DEFAULT_TRACKER_TIMEOUT = "60"
#: The original peer lingered exactly this long after completing.
LEGACY_SEED_TIME = "30"
#: Extra ``--key value`` pairs for murder_tracker.py (Capfile: default_environment).
TRACKER_ARGS_ENV = "MURDER_TRACKER_ARGS"


class LegacyUsageError(Exception):
    """The legacy command line cannot be mapped; the message is one line."""


def _stop_on_sighup() -> None:
    """Make SIGHUP a clean shutdown of the foreground service.

    The recipes stop the tracker and the seeder with ``pkill -f "SCREEN…"``;
    screen then hangs up its window, and a SIGHUP that killed us outright
    would skip the tracker's final dfile save and the seeder's ``stopped``
    announce.  Twisted's reactor handles SIGINT/SIGTERM itself, not SIGHUP.
    """
    def stop() -> None:
        from twisted.internet import reactor
        from twisted.internet.error import ReactorNotRunning

        try:
            reactor.stop()
        except ReactorNotRunning:  # a second hangup while already stopping
            pass

    def hangup(signum: int, frame: object) -> None:
        from twisted.internet import reactor

        # Queued calls run once the reactor runs, so an early hangup still stops it.
        reactor.callFromThread(stop)

    signal.signal(signal.SIGHUP, hangup)


def _err(script: str, message: str) -> None:
    print(f"{script}: {message}", file=sys.stderr, flush=True)


def require_murder(script: str) -> bool:
    """Import the installed package; on failure say how to install it.

    A missing package gets the fixed one-line hint; a package that is there
    but broken (say, Twisted missing) gets the import error itself, since
    "not installed" would send the operator the wrong way.
    """
    try:
        import murder  # noqa: F401
    except ModuleNotFoundError as e:
        if e.name == "murder":
            _err(script, NOT_INSTALLED)
        else:
            _err(script, f"the murder package cannot be imported: {e}")
        return False
    except ImportError as e:
        _err(script, f"the murder package cannot be imported: {e}")
        return False
    return True


# ------------------------------------------------------------------ tracker

#: BitTornado tracker keys the recipes and old Capfiles use -> murder tracker option.
#: ``logfile`` has no tracker option: the script redirects its own output.
TRACKER_KEYS: dict[str, str | None] = {
    "port": "port",
    "bind": "bind",
    "dfile": "dfile",
    "reannounce_interval": "interval",
    "response_size": "numwant-max",
    "timeout_downloaders_interval": "peer-timeout",
    "allowed_dir": "allowed-dir",
    "save_dfile_interval": "save-interval",
    "logfile": None,
}

#: What the original murder_tracker.py and Murder's BitTornado tweaks used.
TRACKER_DEFAULTS: tuple[tuple[str, str], ...] = (
    ("dfile", "data"),
    ("port", "8998"),
    ("reannounce_interval", "15"),
    ("response_size", "500"),
    ("timeout_downloaders_interval", "120"),
    ("save_dfile_interval", "300"),
)

TRACKER_HELP = """\
Usage: python murder_tracker.py [--key value ...]

Runs the murder HTTP tracker in the foreground (announce URL
http://HOST:PORT/announce).  BitTornado-style options, the last value wins:
  --port N                          listening port (default 8998)
  --bind ADDR                       listening address (default: all)
  --dfile PATH                      state file (default: ./data)
  --reannounce_interval SECONDS     announce interval sent to peers (15)
  --response_size N                 peers per announce reply (500)
  --timeout_downloaders_interval S  forget peers silent this long (120)
  --allowed_dir DIR                 only track torrents found in DIR
  --save_dfile_interval SECONDS     how often the state file is saved (300)
  --logfile PATH                    append all output to PATH
Extra pairs may also come from the MURDER_TRACKER_ARGS environment variable
(applied before the command line).  Modern equivalent: murder tracker --help"""


def parse_legacy_pairs(args: Sequence[str]) -> dict[str, str]:
    """Parse BitTornado ``--key value`` pairs; the last value of a key wins.

    BitTornado took no positional arguments and no ``--key=value`` form;
    neither do we, so a typo fails loudly instead of being ignored.
    """
    pairs: dict[str, str] = {}
    pos = 0
    while pos < len(args):
        arg = args[pos]
        if not arg.startswith("--") or arg == "--":
            raise LegacyUsageError(f"unexpected argument {arg!r} (options are --key value pairs)")
        key = arg[2:]
        if key not in TRACKER_KEYS:
            raise LegacyUsageError(f"unknown option --{key}")
        if pos + 1 >= len(args):
            raise LegacyUsageError(f"option --{key} needs a value")
        pairs[key] = args[pos + 1]
        pos += 2
    return pairs


def tracker_argv(pairs: dict[str, str]) -> tuple[list[str], str | None]:
    """Turn legacy pairs into ``murder tracker`` arguments and the logfile path.

    Every peer is asked to re-announce at ``reannounce_interval`` (15 s), as
    the original tracker did (COMPAT.md): the shorter interval that keeps the
    dashboard fresh for leechers is a ``murder tracker`` option, off here.
    """
    argv: list[str] = ["--leecher-interval", "0"]
    for key, value in pairs.items():
        option = TRACKER_KEYS[key]
        if option is not None:
            argv += [f"--{option}", value]
    return argv, pairs.get("logfile")


def tracker_main(argv: Sequence[str]) -> int:
    """``python murder_tracker.py [--key value ...]``: run the tracker until killed."""
    script = "murder_tracker.py"
    args = list(argv[1:])
    if args and args[0] in ("-h", "--help"):
        print(TRACKER_HELP)
        return 0
    try:
        env_args = shlex.split(os.environ.get(TRACKER_ARGS_ENV, ""))
        pairs = dict(TRACKER_DEFAULTS)
        pairs.update(parse_legacy_pairs(env_args))
        pairs.update(parse_legacy_pairs(args))
    except (LegacyUsageError, ValueError) as e:
        _err(script, f"error: {e}")
        _err(script, f"accepted options: {' '.join('--' + k for k in TRACKER_KEYS)}; "
                     "run `python murder_tracker.py --help` for details")
        return 2
    if not require_murder(script):
        return 1
    from twisted.python import usage

    from murder.errors import MurderError
    from murder.tracker import tap

    options_argv, logfile = tracker_argv(pairs)
    options = tap.Options()
    try:
        options.parseOptions(options_argv)
    except usage.UsageError as e:
        _err(script, f"error: {e}")
        _err(script, "run `python murder_tracker.py --help` for details")
        return 2
    if logfile:
        # BitTornado pointed sys.stdout at the logfile; do the same at the fd
        # level so the tracker's log observer (and any traceback) lands there.
        try:
            fd = os.open(logfile, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as e:
            _err(script, f"cannot open logfile {logfile}: {e.strerror}")
            return 1
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
    _stop_on_sighup()
    try:
        return int(tap.runForeground(options) or 0)
    except MurderError as e:
        _err(script, str(e))
        return e.exit_code
    except KeyboardInterrupt:
        return 130


# ------------------------------------------------------------- make torrent

MAKE_TORRENT_USAGE = """Usage:
    python murder_make_torrent.py <file> <trackerhost:port> <target>

    For example:
    python murder_make_torrent.py deploy.tar.gz tracker.twitter.com:8998 deploy.torrent
    """

SIGNING_KEY_ENV = "MURDER_SIGNING_KEY"


def _apply_umask(path: str) -> None:
    """Give the torrent the mode a plain ``open()`` would (BitTornado's did).

    ``write_atomic`` writes through a private 0600 temp file; the legacy
    torrent was readable by the deploy group like any file the user creates.
    """
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


def make_torrent_main(argv: Sequence[str]) -> int:
    """``python murder_make_torrent.py <file> <trackerhost:port> <target>``.

    Prints nothing on success (the recipes expect silence), one line and
    exit 1 on any error; the target is written atomically, never half.
    """
    script = "murder_make_torrent.py"
    if len(argv) != 4:
        print("Incorrect number of arguments")
        print()
        print(MAKE_TORRENT_USAGE)
        return 1
    if not require_murder(script):
        return 1
    import bencodepy

    from murder import metainfo
    from murder.errors import MurderError

    path, hostport, target = argv[1:]
    try:
        # Automatic piece length (128 KiB up to 192 MiB), not BitTornado's
        # fixed 2^18: only our own client reads this torrent, nothing in the
        # recipes depends on the size, and smaller pieces travel through the
        # swarm sooner (bench/README.md: session 2, "128 KiB pieces").
        torrent = metainfo.create(path, f"http://{hostport}/announce")
        key_path = os.environ.get(SIGNING_KEY_ENV)
        if key_path:
            try:
                from murder import trust
            except ImportError:
                _err(script, f"{SIGNING_KEY_ENV} is set but this murder has no signing "
                             "support (murder.trust); refusing to write an unsigned torrent")
                return 1
            torrent = trust.sign_torrent(torrent, trust.load_private_key(key_path))
        metainfo.write_atomic(target, bencodepy.encode(torrent))
        _apply_umask(target)
    except MurderError as e:
        _err(script, str(e))
        return 1
    except OSError as e:
        _err(script, f"cannot write {target}: {e.strerror or e}")
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


# ------------------------------------------------------------------- client

CLIENT_USAGE = """Usage:
    python murder_client.py peer/seed out.torrent OUT.OUT 127.0.0.1

    The last parameter is the local ip address, normally 10.x.x.x
    (empty or missing: the address this host uses toward the tracker)
    """


def detect_local_ip(trackers: Sequence[str]) -> str:
    """The IPv4 address this host would use to reach the first usable tracker.

    ``connect()`` on a UDP socket only picks a route and a source address; no
    packet leaves.  Falls back to the address of the host name, then to ""
    (then no ``ip=`` is sent and the tracker uses the connection's address).
    """
    for url in trackers:
        try:
            parts = urlsplit(url)
            host, port = parts.hostname, parts.port or 80
        except ValueError:
            continue
        if not host:
            continue
        try:
            infos = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_DGRAM)
        except (OSError, UnicodeError):
            continue
        for family, kind, proto, _, address in infos:
            try:
                with socket.socket(family, kind, proto) as s:
                    s.connect(address)
                    return s.getsockname()[0]
            except OSError:
                continue
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return ""


def _trackers_of(torrent: str) -> tuple[str, ...]:
    from murder import metainfo
    from murder.errors import MurderError

    try:
        return metainfo.load(torrent).trackers
    except (MurderError, OSError):
        return ()  # the peer/seeder itself reports the bad torrent


def _remove_unverified(saveas: str) -> None:
    """After a failure, leave nothing for the recipes to trip over or leak.

    A file at ``<saveas>`` did not verify against this torrent (the peer only
    renames into place what did), so ``tar`` must not see it.  The peer keeps
    ``<saveas>.part`` for a resume, but the gem's clean_temp_files removes only
    ``<saveas>`` and the torrent, and every deploy has a new tag: a kept part
    file would fill /tmp.
    """
    try:
        from murder.peer.storage import PART_SUFFIX
    except ImportError:
        PART_SUFFIX = ".part"
    try:
        if os.path.isfile(saveas) and not os.path.islink(saveas):
            os.unlink(saveas)
    except OSError:
        pass
    part = saveas + PART_SUFFIX
    try:
        if os.path.isdir(part) and not os.path.islink(part):
            shutil.rmtree(part, ignore_errors=True)
        elif os.path.lexists(part):
            os.unlink(part)
    except OSError:
        pass


class _Interrupted(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class _ForkedWorker:
    """The detached worker, by PID: the few ``Popen`` calls the foreground needs."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                self.returncode = -1
                return self.returncode
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float) -> int:
        """Wait at most ``timeout`` seconds (polling; the worker is our child)."""
        import time

        deadline = time.monotonic() + timeout
        while self.poll() is None:
            if time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired("murder_client.py peer", timeout)
            time.sleep(0.05)
        return self.returncode  # type: ignore[return-value]

    def _send(self, signum: int) -> None:
        if self.poll() is None:
            try:
                os.kill(self.pid, signum)
            except ProcessLookupError:
                pass

    def terminate(self) -> None:
        self._send(signal.SIGTERM)

    def kill(self) -> None:
        self._send(signal.SIGKILL)


def _stop(child: "_ForkedWorker | subprocess.Popen", grace: float = 10.0) -> None:
    if child.poll() is None:
        child.terminate()
        try:
            child.wait(grace)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(grace)


def _fork_worker(torrent: str, saveas: str, ip: str, write_end: int) -> _ForkedWorker:
    """Fork the detached worker; in the child, run it and never return.

    A fork, not a second interpreter: the original forked too, and a fresh
    ``python`` start plus the package imports is a large share of a peer's CPU
    on a deploy where every host starts at the same moment (bench/README.md,
    "legacy path").  The child keeps this process's command line, so
    ``pkill -f "murder_client.py peer.*<saveas>"`` still finds it.  Called
    before Twisted is imported: the child starts with a single thread and no
    reactor.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return _ForkedWorker(pid)
    code = 1
    try:
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        if devnull > 2:
            os.close(devnull)
        code = run_peer_worker(torrent, saveas, ip, write_end)
    except BaseException as e:  # noqa: BLE001 - the verdict must reach the parent
        _write_status(write_end, f"failed {type(e).__name__}: {e}")
    finally:
        os._exit(code)
    raise AssertionError("unreachable")  # pragma: no cover


def run_peer(script_path: str, torrent: str, saveas: str, ip: str) -> int:
    """Foreground half of ``peer``: fork the detached worker, await its verdict.

    The worker is a fork of this process (so ``pkill -f "murder_client.py
    peer.*<saveas>"`` still finds it), in a new session with stdio on
    /dev/null, and reports ``complete ...`` or ``failed <reason>`` on a pipe.
    On ``complete`` we print the legacy ``done and done`` and return 0 while
    the worker seeds on; on anything else we stop it and return 1.
    """
    script = "murder_client.py"
    read_end, write_end = os.pipe()
    try:
        child = _fork_worker(torrent, saveas, ip, write_end)
    except OSError as e:
        os.close(read_end)
        os.close(write_end)
        _err(script, f"cannot start the peer: {e}")
        return 1
    os.close(write_end)

    def interrupted(signum: int, frame: object) -> None:
        raise _Interrupted(signum)

    # Before completion, an operator's ^C or Capistrano closing the pty stops
    # the download too (as the original did); after it, the worker is on its own.
    previous = {s: signal.signal(s, interrupted)
                for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    reason = None
    try:
        with os.fdopen(read_end, "rb") as status:
            for raw in status:
                line = raw.decode("utf-8", "replace").strip()
                if line.startswith("complete"):
                    print("done and done", flush=True)
                    return 0
                if line.startswith("failed"):
                    reason = line[len("failed"):].strip() or "peer failed"
                    break
        if reason is None:
            try:
                code = child.wait(10)
                reason = f"peer exited with status {code} without finishing"
            except subprocess.TimeoutExpired:
                reason = "peer closed its status pipe without finishing"
    except _Interrupted as e:
        reason = f"interrupted by signal {e.signum}"
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    _stop(child)
    _remove_unverified(saveas)
    _err(script, reason)
    return 1


class _StderrTail(io.TextIOBase):
    """Stands in for the worker's stderr (/dev/null): keeps the last few lines.

    The peer reports most failures on the status fd, but an option error is
    printed before it ever opens it; this lets the worker pass that on.
    """

    def __init__(self, keep: int = 8) -> None:
        super().__init__()
        self.lines: list[str] = []
        self._partial = ""
        self._keep = keep

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        pieces = (self._partial + text).split("\n")
        self._partial = pieces.pop()[-4096:]
        self.lines = (self.lines + [p.strip()[:4096] for p in pieces if p.strip()])[-self._keep:]
        return len(text)

    def reason(self) -> str | None:
        """The peer's own one-line error, if it printed one."""
        lines = self.lines + ([self._partial.strip()] if self._partial.strip() else [])
        for line in reversed(lines):
            if line.startswith("murder peer:"):
                return line[len("murder peer:"):].strip()
        return lines[-1] if lines else None


def run_peer_worker(torrent: str, saveas: str, ip: str, status_fd: int) -> int:
    """Background half of ``peer``: download, verify, place, seed 30 s, exit.

    Runs the package's peer in-process.  It gets a duplicate of the status fd,
    so that if it dies without a verdict we can still report ``failed`` on ours.
    """
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    os.environ.pop(WORKER_ENV, None)
    timeout = os.environ.get(TRACKER_TIMEOUT_ENV) or DEFAULT_TRACKER_TIMEOUT
    peer_fd = os.dup(status_fd)
    args = ["peer", "--torrent", torrent, "--saveas", saveas,
            "--seed-time", LEGACY_SEED_TIME, "--tracker-timeout", timeout,
            "--status-fd", str(peer_fd), "--quiet"]
    if ip:
        args += ["--ip", ip]
    tail = _StderrTail()
    sys.stderr = tail
    try:
        from murder import cli

        code = cli.main(args)
    except BaseException as e:  # noqa: BLE001 - the verdict must reach the parent
        code = 1
        _write_status(status_fd, f"failed {type(e).__name__}: {e}")
    else:
        if code:
            _write_status(status_fd, "failed " + (tail.reason() or
                                                  f"murder peer exited with status {code}"))
    return int(code or 0)


def _write_status(fd: int, line: str) -> None:
    try:
        os.write(fd, (line.replace("\n", " ") + "\n").encode())
    except OSError:
        pass


def verify_payload(torrent: str, path: str) -> str | None:
    """Check every piece of ``path`` against ``torrent``; the failure reason or None."""
    from murder import metainfo
    from murder.errors import MurderError
    from murder.peer.storage import SeedStorage

    try:
        storage = SeedStorage(metainfo.load(torrent), path)
        try:
            storage.verify_all()
        finally:
            storage.close()
    except MurderError as e:
        return str(e)
    except OSError as e:
        return f"{e.filename or torrent}: {e.strerror or e}"
    return None


def run_seeder(torrent: str, saveas: str, ip: str) -> int:
    """``seeder`` mode: verify, print ``done and done``, serve until killed."""
    script = "murder_client.py"
    problem = verify_payload(torrent, saveas)
    if problem:
        _err(script, problem)
        return 1
    print("done and done", flush=True)
    from murder import cli

    _stop_on_sighup()
    # Verified just above; the seeder need not hash the payload a second time.
    args = ["seed", "--torrent", torrent, "--file", saveas, "--skip-verify", "--quiet"]
    if ip:
        args += ["--ip", ip]
    return cli.main(args)


def client_main(argv: Sequence[str], script_path: str) -> int:
    """``python murder_client.py <peer|seeder> <file.torrent> <saveas> [<ip>]``."""
    if len(argv) not in (4, 5):
        print("Incorrect number of arguments")
        print()
        print(CLIENT_USAGE)
        return 1
    if not require_murder("murder_client.py"):
        return 1
    mode, torrent, saveas = argv[1], argv[2], argv[3]
    ip = argv[4].strip() if len(argv) == 5 else ""
    if not ip:
        ip = detect_local_ip(_trackers_of(torrent))
    try:
        if mode == "peer":
            worker_fd = os.environ.get(WORKER_ENV, "")
            if worker_fd.isdigit():
                return run_peer_worker(torrent, saveas, ip, int(worker_fd))
            return run_peer(os.path.abspath(script_path), torrent, saveas, ip)
        return run_seeder(torrent, saveas, ip)
    except KeyboardInterrupt:
        return 130
