"""Helpers for the legacy Capistrano compatibility tests (tests/test_compat_*.py).

- :data:`DIST`: contrib/capistrano_compat/dist, the folder the gem copies to hosts.
- :func:`compat_module`: the scripts' helper module, imported from DIST.
- :func:`run_script`: one legacy script in a subprocess, bounded in time.
- :func:`recipe_env`: an environment whose ``python`` can import ``murder``
  (the recipes say ``python``; on a host that is whatever PATH finds first).
- :class:`RecipeHost`: one simulated host (own working and temp folders,
  own address) that runs the gem's command strings verbatim with ``bash -c``.
- :class:`HostsDns`: a loopback DNS server (``twistd dns --hosts-file``)
  plus a private mount of /etc/resolv.conf, so the recipes' real
  ``LC_ALL=C host $HOSTNAME | awk …`` resolves the simulated hosts
  without any query leaving the machine.
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Mapping, Sequence

from harness import wait_for_port  # noqa: F401  (re-exported: the compat tests import it here)

REPO = Path(__file__).resolve().parent.parent
DIST = REPO / "contrib" / "capistrano_compat" / "dist"
#: bin folder of the interpreter running the tests: it has ``python`` and ``murder``.
VENV_BIN = Path(sys.executable).parent

NOT_INSTALLED_SUFFIX = ("the murder package is not installed "
                        "(pip install murder / see contrib/capistrano_compat/README.md)")


def compat_module() -> ModuleType:
    """Import ``_murder_compat`` from DIST, as the launchers do."""
    name = "_murder_compat"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, DIST / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def recipe_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a recipe command: the venv's bin first on PATH."""
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}"
    if extra:
        env.update(extra)
    return env


def run_script(name: str, *args: str, cwd: Path | str | None = None,
               env: Mapping[str, str] | None = None, timeout: float = 60,
               python: Sequence[str] = (sys.executable,)) -> subprocess.CompletedProcess:
    """Run ``python DIST/name args…`` and return its completed process (text mode)."""
    return subprocess.run([*python, str(DIST / name), *args], cwd=cwd,
                          env=dict(env) if env is not None else recipe_env(),
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def pids_matching(pattern: str) -> list[int]:
    """PIDs whose command line matches ``pattern`` (pgrep -f), excluding pgrep."""
    out = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def wait_until_gone(pattern: str, timeout: float = 10.0) -> list[int]:
    """Wait until no process matches ``pattern``; return those still left."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = pids_matching(pattern)
        if not left:
            return []
        time.sleep(0.1)
    return pids_matching(pattern)


def kill_pids(pids: Sequence[int]) -> None:
    """Backstop cleanup: SIGKILL exactly these PIDs (ignoring ones already gone)."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@dataclass
class StepResult:
    """One recipe command as run: its text, exit status and output."""

    command: str
    returncode: int
    stdout: str
    stderr: str
    seconds: float


@dataclass
class RecipeHost:
    """A simulated host: its own folders, hostname and address, same machine.

    ``run`` executes a command string exactly as Capistrano 2 with
    ``default_run_options[:shell] = 'bash'`` would: ``bash -c '<cmd>'``, in
    the host's home folder, with ``HOSTNAME`` set to the host's name.  With
    ``resolv_conf`` the command runs in a private mount namespace whose
    /etc/resolv.conf points at the test's DNS server.
    """

    name: str
    root: Path
    address: str
    env: dict[str, str] = field(default_factory=dict)
    resolv_conf: Path | None = None
    log: list[StepResult] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def tmp(self) -> Path:
        """The host's /tmp (the gem's temp_path): the release file lives here."""
        return self.root / "tmp"

    def run(self, command: str, timeout: float = 90) -> StepResult:
        """Run one recipe command through bash; never raises on a non-zero exit."""
        env = recipe_env({"HOSTNAME": self.name, **self.env})
        argv = ["bash", "-c", command]
        if self.resolv_conf is not None:
            inner = (f"mount --bind {shlex.quote(str(self.resolv_conf))} /etc/resolv.conf"
                     f" && exec bash -c {shlex.quote(command)}")
            argv = ["unshare", "--mount", "--propagation", "private", "bash", "-c", inner]
        started = time.monotonic()
        proc = subprocess.run(argv, cwd=self.home, env=env, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
        result = StepResult(command, proc.returncode, proc.stdout, proc.stderr,
                            time.monotonic() - started)
        self.log.append(result)
        return result

    def must(self, command: str, timeout: float = 90) -> StepResult:
        """Run a step that must exit 0; the assertion shows the host's output."""
        result = self.run(command, timeout)
        assert result.returncode == 0, (
            f"[{self.name}] {command!r} exited {result.returncode}\n"
            f"stdout: {result.stdout}\nstderr: {result.stderr}")
        return result


def can_private_mount() -> bool:
    """True when ``unshare --mount`` works here (root, no seccomp veto)."""
    try:
        proc = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"],
                              capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


class HostsDns:
    """``twistd dns --hosts-file`` on a loopback address, port 53.

    Names listed in the hosts file answer ``<name> has address <ip>``; any
    other name fails, as ``host $HOSTNAME`` does on a host that DNS does not
    know.  :attr:`resolv_conf` is the file the recipe steps mount over
    /etc/resolv.conf.
    """

    def __init__(self, workdir: Path, hosts: Mapping[str, str], address: str) -> None:
        self.workdir = workdir
        self.address = address
        workdir.mkdir(parents=True, exist_ok=True)
        self.hosts_file = workdir / "hosts"
        self.hosts_file.write_text("".join(f"{ip} {name}\n" for name, ip in hosts.items()))
        self.resolv_conf = workdir / "resolv.conf"
        self.resolv_conf.write_text(f"nameserver {address}\noptions timeout:1 attempts:1\n")
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 20.0) -> None:
        """Start the server and wait until it answers a query for a listed name."""
        self.process = subprocess.Popen(
            [str(VENV_BIN / "twistd"), "-n", "--pidfile=", "-l", str(self.workdir / "dns.log"),
             "dns", "--interface", self.address, "-p", "53",
             "--hosts-file", str(self.hosts_file)],
            cwd=self.workdir, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        name = self.hosts_file.read_text().split()[1]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"twistd dns exited {self.process.returncode}; see "
                                   f"{self.workdir / 'dns.log'}")
            probe = subprocess.run(["host", "-W", "1", name, self.address],
                                   capture_output=True, text=True)
            if "has address" in probe.stdout:
                return
            time.sleep(0.2)
        raise TimeoutError(f"twistd dns on {self.address} did not answer within {timeout}s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
