"""The murder gem's Capistrano recipes, command for command, through real bash.

Each test plays a deploy on simulated hosts of this machine: every host has
its own folders (its ``remote_murder_path``, its /tmp, its destination) and
its own 127.x.y.z address, and runs the exact command strings the gem's tasks
produce (see shared/design/COMPAT.md) with ``bash -c`` — Capistrano 2 with
``default_run_options[:shell] = 'bash'`` — using real GNU screen, pkill, host,
awk, tar and cp.  What Capistrano does itself (scp of the dist tarball and of
the torrent) is a file copy here.

The ``<ip>`` expression of the recipes is evaluated for real: ``host
$HOSTNAME`` asks a DNS server this test runs on loopback (twistd dns with a
hosts file), mounted over /etc/resolv.conf in a private mount namespace, so
no query leaves the machine.  The tracker's port comes from
MURDER_TRACKER_ARGS (the recipe line has none; a Capfile sets it with
``default_environment``), so the test never needs port 8998.

Process hygiene: tags and paths are unique per test, the pkill patterns the
recipes use therefore match only what the test started (except stop_tracker's
fixed pattern: the test refuses to run while another screen runs a
murder_tracker.py), and a finally block SIGKILLs by PID anything whose
command line still holds the test's folder.
"""

from __future__ import annotations

import filecmp
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import bencodepy
import pytest

from harness import wait_for
from compat_recipes import (DIST, HostsDns, RecipeHost, can_private_mount, kill_pids,
                            pids_matching, wait_for_port, wait_until_gone)
from conftest import free_port
from murder import metainfo

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(any(shutil.which(tool) is None
                           for tool in ("bash", "screen", "pkill", "host", "awk", "tar")),
                       reason="needs bash, screen, pkill, host, awk and tar"),
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (private mount of resolv.conf, "
                                                 "DNS on port 53)"),
]

#: The recipes' address expression, verbatim from murder.rb.
IP_EXPR = "`LC_ALL=C host $HOSTNAME | awk '/has address/ {print $4}' | head -n 1`"
TRACKER_SCREEN = "SCREEN.*murder_tracker.py"


# --------------------------------------------------------------- the gem's tasks


def distribute_files(host: RecipeHost, local_tmp: Path) -> None:
    """murder:distribute_files (admin.rb), with the upload as a copy."""
    rmp = host.root / "murder"
    host.must(f"mkdir -p {rmp}/")
    host.must(f"[ $(find '{rmp}/'* | wc -l ) -lt 1000 ] && rm -rf '{rmp}/'* || "
              f"( echo 'Cowardly refusing to remove files! Check the remote_murder_path.' ;"
              f" exit 1 )")
    # `system` on the deploying machine, then Capistrano's sftp upload.
    subprocess.run(["tar", "-c", "-z", "-C", str(DIST), "-f",
                    str(local_tmp / "murder_dist_to_upload.tgz"), "."], check=True)
    shutil.copy(local_tmp / "murder_dist_to_upload.tgz", host.tmp / "murder_dist.tgz")
    host.must(f"tar xf {host.tmp}/murder_dist.tgz -C {rmp}")
    host.must(f"rm {host.tmp}/murder_dist.tgz")


def start_tracker(host: RecipeHost) -> None:
    host.must(f"SCREENRC=/dev/null SYSSCREENRC=/dev/null screen -dms murder_tracker "
              f"python {host.root}/murder/murder_tracker.py && sleep 0.2")


def create_torrent(host: RecipeHost, filename: str, files_path: Path, tracker: str,
                   path_is_file: bool) -> None:
    if path_is_file:
        host.must(f'cp "{files_path}" {filename}')
    else:
        host.must(f'tar -c -z -C {files_path}/ -f {filename} --exclude ".git*" .')
    host.must(f"python {host.root}/murder/murder_make_torrent.py '{filename}' {tracker} "
              f"'{filename}.torrent'")


def start_seeding(host: RecipeHost, tag: str, filename: str) -> None:
    host.must(f"SCREENRC=/dev/null SYSSCREENRC=/dev/null screen -dms 'seeder-{tag}' "
              f"python {host.root}/murder/murder_client.py seeder '{filename}.torrent' "
              f"'{filename}' {IP_EXPR}")


def peer_command(host: RecipeHost, filename: str) -> str:
    return (f"python {host.root}/murder/murder_client.py peer '{filename}.torrent' "
            f"'{filename}' {IP_EXPR}")


# ------------------------------------------------------------------ fixtures


class Deploy:
    """One simulated deploy: hosts, DNS, unique tag; cleans up after itself."""

    def __init__(self, base: Path, peer_count: int, peers_in_dns: bool) -> None:
        self.base = base
        self.tag = f"compat-{uuid.uuid4().hex[:10]}"
        net = f"127.{random.randint(100, 250)}.{random.randint(1, 250)}."
        self.local_tmp = base / "deployer"
        self.local_tmp.mkdir()
        self.screendir = base / "screens"
        self.screendir.mkdir(mode=0o700)
        self.tracker_port = free_port()
        env = {"SCREENDIR": str(self.screendir), "MURDER_TRACKER_TIMEOUT": "20"}
        self.seeder = RecipeHost("seed0", base / "seed0", net + "10",
                                 env={**env, "MURDER_TRACKER_ARGS":
                                      f"--port {self.tracker_port}"})
        self.peers = [RecipeHost(f"peer{i}", base / f"peer{i}", net + str(10 + i), env=dict(env))
                      for i in range(1, peer_count + 1)]
        known = [self.seeder] + (self.peers if peers_in_dns else [])
        self.dns = HostsDns(base / "dns", {h.name: h.address for h in known}, net + "53")
        for host in [self.seeder, *self.peers]:
            host.resolv_conf = self.dns.resolv_conf

    @property
    def hosts(self) -> list[RecipeHost]:
        return [self.seeder, *self.peers]

    @property
    def tracker(self) -> str:
        """``tracker_host:tracker_port`` as create_torrent writes it."""
        return f"{self.seeder.address}:{self.tracker_port}"

    def filename(self, host: RecipeHost, tag: str | None = None) -> str:
        """The gem's ``filename``: <temp_path>/<tag>.tgz on that host."""
        return f"{host.tmp}/{tag or self.tag}.tgz"

    def wait_for_seeder(self, filename: str, timeout: float = 30.0) -> None:
        """Block until the tracker counts the seeder (peers then find it at once)."""
        info_hash = metainfo.load(filename + ".torrent").info_hash
        url = (f"http://127.0.0.1:{self.tracker_port}/scrape?info_hash="
               + urllib.request.quote(info_hash, safe=""))

        def seeders() -> int:
            with urllib.request.urlopen(url, timeout=5) as reply:
                files = bencodepy.decode(reply.read()).get(b"files", {})
            return int(files.get(info_hash, {}).get(b"complete", 0))

        wait_for(seeders, timeout, "the seeder's announce")

    def run_on_peers(self, command_for) -> list:
        """Run one step on every peer in parallel, as Capistrano does."""
        with ThreadPoolExecutor(len(self.peers)) as pool:
            return list(pool.map(lambda h: h.run(command_for(h)), self.peers))

    def leftovers(self, timeout: float = 0.0) -> list[int]:
        """PIDs (other than the DNS server) whose command line holds the test folder."""
        deadline = time.monotonic() + timeout
        dns_pid = self.dns.process.pid if self.dns.process else None
        while True:
            left = [p for p in pids_matching(str(self.base)) if p != dns_pid]
            if not left or time.monotonic() >= deadline:
                return left
            time.sleep(0.1)


@pytest.fixture
def deploy_factory(tmp_path):
    """Build :class:`Deploy` objects; afterwards kill by PID whatever they left."""
    if not can_private_mount():
        pytest.skip("unshare --mount is not permitted here")
    if pids_matching(TRACKER_SCREEN):
        pytest.skip("another screen runs a murder_tracker.py: stop_tracker's fixed "
                    "pattern would hit it")
    made: list[Deploy] = []

    def factory(peer_count: int = 3, peers_in_dns: bool = True) -> Deploy:
        deploy = Deploy(tmp_path, peer_count, peers_in_dns)
        made.append(deploy)
        deploy.dns.start()
        return deploy

    yield factory
    for deploy in made:
        deploy.dns.stop()
        left = deploy.leftovers()
        kill_pids(left)
        assert left == [], f"processes left running after the test: {left}"


def release_tree(root: Path) -> Path:
    """A small release: nested folders, an empty file, a binary, a .git to exclude."""
    files = {
        "app/main.py": b"print('hello')\n",
        "app/lib/data.bin": os.urandom(900_000),
        "app/lib/empty.txt": b"",
        "config/settings.yml": b"a: 1\n" * 1000,
        "README": b"release\n",
    }
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    return root


def same_tree(a: Path, b: Path, ignore: tuple[str, ...] = ()) -> bool:
    """True when both trees hold the same names and bytes (deep compare)."""
    cmp = filecmp.dircmp(a, b, ignore=list(ignore))

    def walk(c: filecmp.dircmp) -> bool:
        if c.left_only or c.right_only or c.funny_files:
            return False
        _, mismatch, errors = filecmp.cmpfiles(c.left, c.right, c.common_files, shallow=False)
        if mismatch or errors:
            return False
        return all(walk(sub) for sub in c.subdirs.values())

    return walk(cmp)


# --------------------------------------------------------------------- tests


class RecipeDeployTests:
    """The gem's tasks, in order, deploy a release to every peer."""

    def test_tarball_deploy(self, deploy_factory, tmp_path):
        """distribute_files, start_tracker, create_torrent (tar), start_seeding, peer
        (3 hosts, their own addresses from `host`), untar, stop_peering,
        stop_seeding, stop_tracker, clean_temp_files: every step exits 0 and
        every destination holds the original tree."""
        d = deploy_factory(peer_count=3)
        source = release_tree(tmp_path / "release")
        for host in d.hosts:
            distribute_files(host, d.local_tmp)
        start_tracker(d.seeder)
        wait_for_port("127.0.0.1", d.tracker_port)
        seed_file = d.filename(d.seeder)
        create_torrent(d.seeder, seed_file, source, d.tracker, path_is_file=False)
        for peer in d.peers:  # download_torrent, then upload to each peer
            shutil.copy(seed_file + ".torrent", d.filename(peer) + ".torrent")
        start_seeding(d.seeder, d.tag, seed_file)
        d.wait_for_seeder(seed_file)

        destinations = {p.name: p.root / "deploy" / d.tag for p in d.peers}
        for peer in d.peers:
            dest = destinations[peer.name]
            peer.must(f"mkdir -p {dest}/")
            peer.must(f"find '{dest}/'* >/dev/null 2>&1 && echo \"destination_path {dest} on "
                      f"$HOSTNAME is not empty\" && exit 1 || exit 0")
        results = d.run_on_peers(lambda h: peer_command(h, d.filename(h)))
        for peer, result in zip(d.peers, results):
            assert result.returncode == 0, (peer.name, result.stdout, result.stderr)
            assert result.stdout.splitlines()[-1] == "done and done"
            assert result.seconds < 60
        # Every peer answered `host $HOSTNAME` with its own address.
        for peer in d.peers:
            assert peer.run(f"echo {IP_EXPR}").stdout.strip() == peer.address
        for peer in d.peers:
            peer.must(f"tar xf {d.filename(peer)} -C {destinations[peer.name]}")
            assert same_tree(source, destinations[peer.name], ignore=(".git",))
            assert not (destinations[peer.name] / ".git").exists()

        # The lingering seeders are still there for stop_peering to find.
        for peer in d.peers:
            assert pids_matching(f"murder_client.py peer.*{d.filename(peer)}")
            peer.must(f"pkill -f \"murder_client.py peer.*{d.filename(peer)}\"")
            assert wait_until_gone(f"murder_client.py peer.*{d.filename(peer)}") == []
        d.seeder.must(f"pkill -f \"SCREEN.*seeder-{d.tag}\"")
        assert wait_until_gone(f"murder_client.py seeder '{seed_file}") == []
        d.seeder.must("pkill -f 'SCREEN.*murder_tracker.py'")
        assert wait_until_gone(f"{d.seeder.root}/murder/murder_tracker.py") == []
        for host in d.hosts:
            host.must(f"rm -f {d.filename(host)} {d.filename(host)}.torrent || exit 0")
            assert not os.path.exists(d.filename(host))
            assert not os.path.exists(d.filename(host) + ".torrent")
        # The tracker wrote its state file `data` in its working directory at exit.
        assert (d.seeder.home / "data").is_file()

    def test_path_is_file_with_silent_host(self, deploy_factory, tmp_path):
        """The deploy strategy's flow (path_is_file: cp instead of tar) on hosts that
        `host $HOSTNAME` does not know: the empty <ip> makes a 3-argument call,
        which still seeds and downloads, and `cp` delivers the exact release."""
        d = deploy_factory(peer_count=2, peers_in_dns=False)
        release = tmp_path / "20260101120000.tar.gz"
        release.write_bytes(os.urandom(1_500_000))
        tag = release.name
        for host in d.hosts:
            distribute_files(host, d.local_tmp)
        start_tracker(d.seeder)
        wait_for_port("127.0.0.1", d.tracker_port)
        # The strategy uploads the release to the seeder's remote_filename first.
        remote_filename = d.seeder.root / "releases" / release.name
        remote_filename.parent.mkdir()
        shutil.copy(release, remote_filename)
        seed_file = d.filename(d.seeder, tag)
        create_torrent(d.seeder, seed_file, remote_filename, d.tracker, path_is_file=True)
        for peer in d.peers:
            shutil.copy(seed_file + ".torrent", d.filename(peer, tag) + ".torrent")
            assert peer.run(f"echo [{IP_EXPR}]").stdout.strip() == "[]"
        start_seeding(d.seeder, tag, seed_file)
        d.wait_for_seeder(seed_file)

        results = d.run_on_peers(lambda h: peer_command(h, d.filename(h, tag)))
        for peer, result in zip(d.peers, results):
            assert result.returncode == 0, (peer.name, result.stdout, result.stderr)
            assert result.stdout.splitlines()[-1] == "done and done"
            destination = peer.root / "releases" / release.name
            destination.parent.mkdir()
            peer.must(f"cp {d.filename(peer, tag)} {destination}")
            assert destination.read_bytes() == release.read_bytes()

        for peer in d.peers:
            peer.must(f"pkill -f \"murder_client.py peer.*{d.filename(peer, tag)}\"")
            assert wait_until_gone(f"murder_client.py peer.*{d.filename(peer, tag)}") == []
        d.seeder.must(f"pkill -f \"SCREEN.*seeder-{tag}\"")
        d.seeder.must("pkill -f 'SCREEN.*murder_tracker.py'")
        for host in d.hosts:
            host.must(f"rm -f {d.filename(host, tag)} {d.filename(host, tag)}.torrent || exit 0")
        assert d.leftovers(timeout=10) == []


class RecipeFailureTests:
    """A peer step that cannot finish fails the task, quickly and cleanly."""

    def test_tracker_down(self, deploy_factory, tmp_path):
        """No tracker: the peer step exits non-zero within the tracker timeout with a
        one-line reason, leaves no file at <saveas> (not even the stale partial
        file that was there) and no process behind, so Capistrano aborts before
        `tar` ever reads a broken file."""
        d = deploy_factory(peer_count=1)
        peer = d.peers[0]
        peer.env["MURDER_TRACKER_TIMEOUT"] = "3"
        distribute_files(peer, d.local_tmp)
        payload = tmp_path / "payload.tgz"
        payload.write_bytes(os.urandom(600_000))
        torrent = metainfo.create(str(payload), f"http://{d.tracker}/announce",
                                  piece_length=metainfo.LEGACY_PIECE_LENGTH)
        target = d.filename(peer)
        Path(target + ".torrent").write_bytes(bencodepy.encode(torrent))
        Path(target).write_bytes(b"stale partial download")

        result = peer.run(peer_command(peer, target), timeout=60)
        assert result.returncode != 0
        assert result.seconds < 30
        assert "done and done" not in result.stdout
        reason = result.stderr.strip().splitlines()
        assert len(reason) == 1 and reason[0].startswith("murder_client.py: ")
        assert "tracker" in reason[0]
        assert not os.path.exists(target)
        assert [p for p in os.listdir(peer.tmp) if p.startswith(d.tag)] == [
            f"{d.tag}.tgz.torrent"]
        assert wait_until_gone(f"murder_client.py peer.*{target}") == []
        # Nothing left to kill: stop_peering fails, as documented in the README.
        assert peer.run(f"pkill -f \"murder_client.py peer.*{target}\"").returncode == 1


class ShellQuirkTests:
    """The README's claim about dash and self-matching pkill patterns holds here."""

    @pytest.mark.skipif(os.path.realpath("/bin/sh").rsplit("/", 1)[-1] != "dash",
                        reason="/bin/sh is not dash")
    def test_dash_kills_its_own_parent(self, tmp_path):
        """`sh -c 'pkill -f "murder_client.py peer.*<f>"'` (Capistrano's default
        shell) kills its own sh and exits 143; with bash (the Capfile fix) it
        exits 0. Both stop the matching process."""
        marker = tmp_path / f"{uuid.uuid4().hex}.tgz"
        pattern = f"murder_client.py peer.*{marker}"
        # sh dies of SIGTERM (-15 here; a calling shell or Capistrano reports 143).
        for shell, expected in (("sh", -signal.SIGTERM), ("bash", 0)):
            # A stand-in whose command line looks like a lingering peer's.
            victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)",
                                       "murder_client.py", "peer", str(marker)])
            try:
                deadline = time.monotonic() + 10
                while victim.pid not in pids_matching(pattern) and time.monotonic() < deadline:
                    time.sleep(0.05)
                result = subprocess.run([shell, "-c", f'pkill -f "{pattern}"'], timeout=30)
                assert result.returncode == expected, shell
                assert victim.wait(10) == -15
            finally:
                if victim.poll() is None:
                    victim.kill()
                    victim.wait()
