"""`murder deploy` against real OpenSSH servers, one per network namespace.

Each host is a namespace on a shaped bridge (bench/netns.py) running Debian's
``sshd -D`` in a private mount namespace, so DEST's parent is a tmpfs of its
own (bench/sshfleet.py).  Keys, known_hosts and ssh_config are made here;
host keys are checked strictly.  The deploy runs on the "build host" (the
seeder namespace, 198.18.0.2) with the project's venv ``murder`` as the
remote command.  Hosts 0-7 are healthy; 8 lacks murder (its venv bin is
covered by an empty tmpfs); 9 has a 1 MiB disk; 10's key is not in
known_hosts; 11 has no sshd; 198.18.0.250 does not exist.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import sha256_file

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))

import sshfleet  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.netns]

VENV_BIN = Path(sys.executable).parent
MURDER = str(VENV_BIN / "murder")
GOOD = list(range(8))
NO_MURDER, DISK_FULL, UNKNOWN_KEY, NO_SSHD = 8, 9, 10, 11
NOWHERE = "198.18.0.250"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    why = sshfleet.fleet_available()
    if why:
        pytest.skip(why)
    work = tmp_path_factory.mktemp("fleet")
    f = sshfleet.SSHFleet(work, 12, rate_mbit=200.0)
    try:
        f.build(unknown_key=[UNKNOWN_KEY])
        for i in range(12):
            if i == NO_SSHD:
                continue
            f.start(i, tmpfs_size="1m" if i == DISK_FULL else "64m",
                    hide=[str(VENV_BIN)] if i == NO_MURDER else ())
        yield f
    finally:
        f.close()


def dest(fleet) -> str:
    return str(fleet.root / "releases")


def payload(tmp_path: Path, name: str, size: int) -> Path:
    path = tmp_path / name
    with open(path, "wb") as f:
        f.write(os.urandom(size))
    return path


def deploy_argv(fleet, *args: str) -> list[str]:
    return fleet.deploy_argv([MURDER, "deploy", "--ssh-config", str(fleet.ssh_config),
                              "--remote-murder", MURDER, *args])


def run_deploy(fleet, *args: str, stdin: str | None = None, timeout: float = 60):
    return subprocess.run(deploy_argv(fleet, *args), input=stdin, capture_output=True,
                          text=True, timeout=timeout)


def host_sha(fleet, i: int, path: str) -> str | None:
    r = fleet.on_host(i, ["sha256sum", path])
    return r.stdout.split()[0] if r.returncode == 0 else None


def wait_no_processes(fleet, indexes, timeout: float = 10.0) -> dict:
    """Processes (besides sshd) still in the hosts' namespaces after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        left = {i: fleet.processes(i) for i in indexes if fleet.processes(i)}
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


def report_hosts(path: Path) -> dict:
    doc = json.loads(path.read_text())
    return {h["host"]: h for h in doc["hosts"]}


class DeploySSHTests:
    """Whole deploys over real ssh to namespace hosts."""

    def test_all_hosts_verified_from_stdin_then_again_at_once(self, fleet, tmp_path):
        """Hosts from stdin (comments, blanks, duplicates ignored): all 8 hold the
        payload with the right sha256, --then ran on each, nothing is left running;
        a second deploy of the same release finishes with nothing downloaded."""
        data = payload(tmp_path, "release-a.bin", 3 * 2**20 + 123)
        want = sha256_file(data)
        addrs = [fleet.hosts[i].addr for i in GOOD]
        hosts = "# the fleet\n\n" + "\n".join(addrs) + f"\n{addrs[0]}  # again\nroot@{addrs[1]}\n"
        report = tmp_path / "report.json"
        r = run_deploy(fleet, "--hosts", "-", "--report", str(report),
                       "--then", 'ln -sfn "$MURDER_PAYLOAD" current', str(data), dest(fleet),
                       stdin=hosts.replace(f"root@{addrs[1]}", addrs[1]))
        assert r.returncode == 0, r.stdout + r.stderr
        assert "deployed 3.0 MiB to all 8 hosts" in r.stdout
        target = f"{dest(fleet)}/release-a.bin"
        for i in GOOD:
            assert host_sha(fleet, i, target) == want, f"host {i}"
            link = fleet.on_host(i, ["readlink", f"{dest(fleet)}/current"]).stdout.strip()
            assert link == target
        hosts_report = report_hosts(report)
        assert sorted(hosts_report) == sorted(addrs)
        assert all(h["result"] == "verified" for h in hosts_report.values())
        assert sum(h["bytes_down"] for h in hosts_report.values()) >= 8 * data.stat().st_size
        assert wait_no_processes(fleet, GOOD) == {}

        again = tmp_path / "again.json"
        r = run_deploy(fleet, "--report", str(again), *[a for h in addrs for a in ("--host", h)],
                       str(data), dest(fleet))
        assert r.returncode == 0, r.stdout + r.stderr
        hosts_report = report_hosts(again)
        assert all(h["result"] == "verified" for h in hosts_report.values())
        assert all(h["bytes_down"] == 0 for h in hosts_report.values())
        assert wait_no_processes(fleet, GOOD) == {}

    def test_each_failure_named_with_its_reason(self, fleet, tmp_path):
        """Unreachable, sshd down, unknown host key, murder missing, disk full, a
        peer killed mid-run and a failing --then each fail only their host, with
        the right kind; every other host verifies; exit status is 1."""
        data = payload(tmp_path, "release-b.bin", 4 * 2**20)
        want = sha256_file(data)
        slow, then_fails = 6, 7
        fleet.on_host(then_fails, ["touch", str(fleet.root / "FAIL_THEN")])
        fleet.set_rate(slow, 2.0)
        report = tmp_path / "report.json"
        hosts = [h.addr for h in fleet.hosts] + [NOWHERE]
        args = ["--report", str(report), "--retries", "1",
                "--then", "test ! -e ../FAIL_THEN", str(data), dest(fleet)]
        proc = subprocess.Popen(deploy_argv(fleet, *[a for h in hosts for a in ("--host", h)],
                                            *args),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            part = f"{dest(fleet)}/release-b.bin.part"
            deadline = time.monotonic() + 30
            while fleet.on_host(slow, ["test", "-s", part]).returncode != 0:
                assert time.monotonic() < deadline, "the slow host never started downloading"
                assert proc.poll() is None
                time.sleep(0.1)
            victims = [p for p in sshfleet.netns.ns_pids(fleet.hosts[slow].host.ns)
                       if b"peer --torrent -" in Path(f"/proc/{p}/cmdline").read_bytes()
                       .replace(b"\0", b" ")]
            assert len(victims) == 1
            os.kill(victims[0], signal.SIGKILL)
            out, _ = proc.communicate(timeout=60)
        finally:
            sshfleet.kill_group(proc)
            fleet.set_rate(slow, 200.0)
        assert proc.returncode == 1, out
        got = {h: (e["result"], e["kind"]) for h, e in report_hosts(report).items()}
        addr = [h.addr for h in fleet.hosts]
        expected_fail = {
            NOWHERE: "unreachable", addr[NO_SSHD]: "unreachable",
            addr[UNKNOWN_KEY]: "host-key-refused", addr[NO_MURDER]: "murder-not-installed",
            addr[DISK_FULL]: "disk-full", addr[slow]: "peer-failed",
            addr[then_fails]: "then-failed",
        }
        for host, kind in expected_fail.items():
            assert got[host] == ("failed", kind), (host, out)
            assert host in out  # named in the end table
        for i in GOOD:
            if i in (slow, then_fails):
                continue
            assert got[addr[i]] == ("verified", None)
            assert host_sha(fleet, i, f"{dest(fleet)}/release-b.bin") == want
        assert report_hosts(report)[NOWHERE]["attempts"] == 2  # one retry
        assert "FAILED: 7 of 13 hosts (6 verified)" in out
        assert wait_no_processes(fleet, [i for i in range(12) if i != NO_SSHD]) == {}

    def test_ctrl_c_stops_every_host_cleanly(self, fleet, tmp_path):
        """SIGINT mid-deploy: exit 130, no payload (partial or whole) at DEST on any
        host, the .part kept for a resume, no process left on any host."""
        data = payload(tmp_path, "release-c.bin", 6 * 2**20)
        hosts = GOOD[:4]
        fleet.set_seeder_upload(4.0)
        report = tmp_path / "report.json"
        proc = subprocess.Popen(
            deploy_argv(fleet, "--report", str(report),
                        *[a for i in hosts for a in ("--host", fleet.hosts[i].addr)],
                        str(data), dest(fleet)),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        part = f"{dest(fleet)}/release-c.bin.part"
        try:
            deadline = time.monotonic() + 30
            while fleet.on_host(hosts[0], ["test", "-s", part]).returncode != 0:
                assert time.monotonic() < deadline, "no host started downloading"
                assert proc.poll() is None
                time.sleep(0.1)
            proc.send_signal(signal.SIGINT)
            out, _ = proc.communicate(timeout=30)
        finally:
            sshfleet.kill_group(proc)
            fleet.set_seeder_upload(200.0)
        assert proc.returncode == 130, out
        assert "interrupted by SIGINT" in out
        assert wait_no_processes(fleet, hosts) == {}
        for i in hosts:
            assert fleet.on_host(i, ["test", "-e", f"{dest(fleet)}/release-c.bin"]
                                 ).returncode != 0
        assert fleet.on_host(hosts[0], ["test", "-s", part]).returncode == 0
        assert all(h["kind"] == "interrupted" for h in report_hosts(report).values())
