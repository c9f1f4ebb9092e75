"""A fleet of real OpenSSH servers, one per network namespace, for `murder deploy`.

Built on :mod:`netns` (one namespace per host on a shaped bridge): every peer
host runs Debian's ``/usr/sbin/sshd -D`` on its own address, inside a private
mount namespace where ``root`` (the deploy's DEST parent) is a fresh tmpfs, so
each host has its own view of DEST while sharing this machine's filesystem
(and so the project's venv, used as the remote ``murder``).  Keys,
``known_hosts`` and an ``ssh_config`` are generated here; host keys are
checked strictly (``StrictHostKeyChecking yes``).  The deploy itself runs in
the seeder host's namespace (198.18.0.2).

Used by tests/test_deploy_ssh.py and bench/deploy_bench.py.  Everything is
stopped by PID and the namespaces deleted in :meth:`SSHFleet.close`.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import netns

SSHD = "/usr/sbin/sshd"


def fleet_available() -> str | None:
    """None when a fleet can be built here, else why not."""
    why = netns.netns_available()
    if why:
        return why
    for tool in (SSHD, shutil.which("ssh"), shutil.which("ssh-keygen"),
                 shutil.which("unshare"), shutil.which("nsenter")):
        if not tool or not os.access(tool, os.X_OK):
            return f"{tool or 'ssh/ssh-keygen/unshare/nsenter'} not installed (openssh-server)"
    return None


def _keygen(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "murder-test",
                    "-f", str(path)], check=True, capture_output=True, timeout=30)
    return path.with_suffix(".pub").read_text().strip() if path.suffix else \
        Path(str(path) + ".pub").read_text().strip()


@dataclass
class FleetHost:
    """One ssh server: its netns host, sshd process and options."""

    host: netns.Host
    proc: subprocess.Popen | None = None
    tmpfs_size: str = "256m"
    hide: tuple[str, ...] = ()

    @property
    def addr(self) -> str:
        return self.host.addr


@dataclass
class SSHFleet:
    """``n`` sshd hosts (+ the tracker/seeder hosts of :class:`netns.Topology`)."""

    workdir: Path
    n: int
    rate_mbit: float = 100.0
    root: Path = field(init=False)
    topo: netns.Topology = field(init=False)
    hosts: list[FleetHost] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir)
        self.root = self.workdir / "srv"
        self.root.mkdir(parents=True, exist_ok=True)
        self.topo = netns.Topology(self.n, self.rate_mbit)
        self.hosts = [FleetHost(h) for h in self.topo.peers]
        self.keys = self.workdir / "keys"

    # ---------------------------------------------------------------- set-up
    def build(self, unknown_key: Sequence[int] = ()) -> "SSHFleet":
        """Namespaces, keys, configs; hosts in ``unknown_key`` are left out of known_hosts."""
        self.topo.build()
        self.keys.mkdir(exist_ok=True)
        os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege-separation directory
        client_pub = _keygen(self.keys / "client")
        (self.keys / "authorized_keys").write_text(client_pub + "\n")
        known = []
        for i, fh in enumerate(self.hosts):
            pub = _keygen(self.keys / f"host{i}")
            if i not in unknown_key:
                known.append(f"{fh.addr} {' '.join(pub.split()[:2])}")
            (self.keys / f"sshd{i}.conf").write_text(self._sshd_config(i))
        (self.keys / "known_hosts").write_text("\n".join(known) + "\n")
        (self.keys / "ssh_config").write_text(
            "Host *\n"
            "  User root\n"
            f"  IdentityFile {self.keys / 'client'}\n"
            "  IdentitiesOnly yes\n"
            f"  UserKnownHostsFile {self.keys / 'known_hosts'}\n"
            "  GlobalKnownHostsFile /dev/null\n"
            "  StrictHostKeyChecking yes\n"
            "  ConnectTimeout 3\n"
            "  LogLevel ERROR\n")
        return self

    def _sshd_config(self, i: int) -> str:
        return (f"ListenAddress {self.hosts[i].addr}:22\n"
                f"HostKey {self.keys / f'host{i}'}\n"
                f"AuthorizedKeysFile {self.keys / 'authorized_keys'}\n"
                "PidFile none\nPermitRootLogin prohibit-password\nPasswordAuthentication no\n"
                "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nUseDNS no\n"
                "PrintMotd no\nMaxStartups 200\nMaxSessions 50\nLogLevel INFO\n"
                "Subsystem sftp internal-sftp\n")

    @property
    def ssh_config(self) -> Path:
        return self.keys / "ssh_config"

    def start(self, index: int, *, tmpfs_size: str = "256m", hide: Sequence[str] = (),
              timeout: float = 15.0) -> None:
        """Start host ``index``'s sshd in its namespace, DEST root on a private
        tmpfs of ``tmpfs_size``, ``hide`` directories covered by an empty tmpfs
        (e.g. the venv's bin: murder "not installed" there).  Returns once
        sshd says it is listening."""
        fh = self.hosts[index]
        fh.tmpfs_size, fh.hide = tmpfs_size, tuple(hide)
        mounts = [f"mount -t tmpfs -o size={tmpfs_size} murder-fleet {self.root}"]
        mounts += [f"mount -t tmpfs -o size=1m,ro murder-hide {d}" for d in hide]
        script = " && ".join(mounts) + \
            f" && exec {SSHD} -D -e -f {self.keys / f'sshd{index}.conf'}"
        fh.proc = subprocess.Popen(
            self.topo.argv(fh.host, ["unshare", "--mount", "--propagation", "private",
                                     "sh", "-c", script]),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        seen = b""
        while b"Server listening" not in seen:
            left = deadline - time.monotonic()
            if left <= 0 or fh.proc.poll() is not None:
                raise RuntimeError(f"sshd on {fh.addr} did not start: "
                                   f"{seen.decode(errors='replace')[-500:]}")
            ready, _, _ = select.select([fh.proc.stderr], [], [], min(left, 0.5))
            if ready:
                chunk = os.read(fh.proc.stderr.fileno(), 4096)
                if not chunk:
                    continue
                seen += chunk
        # From here sshd's log is not read: send it nowhere so it never blocks.
        os.set_blocking(fh.proc.stderr.fileno(), False)

    def stop(self, index: int) -> None:
        """Stop host ``index``'s sshd (by PID)."""
        proc = self.hosts[index].proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self.hosts[index].proc = None

    def close(self) -> None:
        for i in range(len(self.hosts)):
            try:
                self.stop(i)
            except Exception:
                pass
        self.topo.teardown()

    # ------------------------------------------------------------ inspection
    def on_host(self, index: int, argv: Sequence[str], timeout: float = 30.0
                ) -> subprocess.CompletedProcess:
        """Run ``argv`` in host ``index``'s mount (and network) namespace."""
        pid = self.hosts[index].proc.pid
        return subprocess.run(["nsenter", "-t", str(pid), "-m", "-n", *argv],
                              capture_output=True, text=True, timeout=timeout)

    def processes(self, index: int) -> list[str]:
        """Command lines of the processes in host ``index``'s namespace, sshd excluded."""
        fh = self.hosts[index]
        keep = fh.proc.pid if fh.proc is not None else None
        out = []
        for pid in netns.ns_pids(fh.host.ns):
            if pid == keep:
                continue
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    out.append(f.read().replace(b"\0", b" ").decode(errors="replace").strip())
            except OSError:
                pass
        return out

    def set_rate(self, index: int, rate_mbit: float) -> None:
        """Change host ``index``'s download shaping (its bridge port's egress)."""
        h = self.hosts[index].host
        self._set_rate(h, rate_mbit)

    def _set_rate(self, h: netns.Host, rate_mbit: float) -> None:
        rate = int(rate_mbit * 1e6)
        subprocess.run(["tc", "-n", self.topo.bridge_ns, "class", "change", "dev",
                        h.bridge_port, "parent", "1:", "classid", "1:10", "htb", "rate",
                        f"{rate}bit", "ceil", f"{rate}bit", "burst", "66000b",
                        "cburst", "66000b"], check=True, capture_output=True, timeout=10)

    def set_seeder_upload(self, rate_mbit: float) -> None:
        """Change the build host's (deploy's) upload shaping (its eth0 egress)."""
        h = self.topo.seeder
        rate = int(rate_mbit * 1e6)
        subprocess.run(["tc", "-n", h.ns, "class", "change", "dev", "eth0", "parent", "1:",
                        "classid", "1:10", "htb", "rate", f"{rate}bit", "ceil", f"{rate}bit",
                        "burst", "66000b", "cburst", "66000b"],
                       check=True, capture_output=True, timeout=10)

    def deploy_argv(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run on the build host (the seeder's namespace, 198.18.0.2)."""
        return self.topo.argv(self.topo.seeder, argv)


def kill_group(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    """Stop a process we started (by PID), then reap it."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
