"""`murder deploy`: host lists, per-host records, failure reasons, argv, display (in memory),
plus the local transport end to end (real processes on loopback, no SSH)."""

from __future__ import annotations

import io
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from twisted.internet.task import Clock
from twisted.python import usage

from murder import bencode
from murder.deploy import core
from murder.deploy.core import HostRecord, classify_exit
from murder.deploy.display import Display, progress_text
from murder.deploy.hosts import Target, parse_host_lines, parse_target, unique
from murder.deploy.tap import DeployOptions
from murder.deploy.transport import Transport, host_dest, peer_command, then_command
from murder.errors import ConfigError, MetainfoError
from murder.peer.tap import read_torrent_stream

MURDER = str(Path(sys.executable).parent / "murder")


class HostListTests:
    """``[user@]host[:port]`` lines, comments, duplicates."""

    def test_forms(self):
        """Name, user, port and bracketed IPv6 parse; the name round-trips."""
        assert parse_target("web1") == Target("web1")
        assert parse_target("deploy@web1.example.com:2222") == \
            Target("web1.example.com", "deploy", 2222)
        assert parse_target("[fd00::1]:22") == Target("fd00::1", None, 22)
        assert parse_target("root@[fd00::1]").name == "root@[fd00::1]"
        assert parse_target("10.0.0.1:22").name == "10.0.0.1:22"

    @pytest.mark.parametrize("spec", ["", "-oProxyCommand=x", "a b", "host:0", "host:70000",
                                      "@host", "host:", "h;rm"])
    def test_refused(self, spec):
        """Option-like, spaced, shell-special or out-of-range specs are refused."""
        with pytest.raises(ConfigError):
            parse_target(spec)

    def test_lines(self):
        """Comments, blank lines and duplicates are ignored; order is kept."""
        text = "# fleet\n\nweb1\nweb2  # second\nweb1\n  root@db:2200 \n"
        assert [t.name for t in unique(parse_host_lines(text))] == ["web1", "web2", "root@db:2200"]

    def test_bad_line_named(self):
        """A bad line fails the whole list with its line number."""
        with pytest.raises(ConfigError, match="hosts.txt line 3"):
            parse_host_lines("a\nb\nc d\n", "hosts.txt")


class HostRecordTests:
    """What a session says, turned into state."""

    def test_progress_totals_and_verdict(self):
        """Progress lines give the fraction, the totals line the bytes, `complete` the path."""
        r = HostRecord("h")
        r.log_line("12:00:00.000 murder peer: rel: 25.0% (4/16 pieces)  down 1.0 MiB/s")
        assert (r.pieces, r.total_pieces, r.fraction) == (4, 16, 0.25)
        assert r.status_line("complete /srv/rel") == "complete"
        assert r.path == "/srv/rel" and r.fraction == 1.0
        r.log_line("murder peer: totals: uploaded 300 bytes (0.10x the payload), "
                   "downloaded 3000, wasted 0")
        assert (r.bytes_up, r.bytes_down) == (300, 3000)

    def test_failed_verdicts(self):
        """`failed` lines are classified: disk full, too old, else peer failed."""
        r = HostRecord("h")
        r.status_line("failed storage error at /x: no space left on device")
        assert r.kind == core.DISK_FULL and r.reason.startswith("disk full:")
        r = HostRecord("h")
        r.status_line("failed option --stop-on-eof not recognized")
        assert r.kind == core.TOO_OLD
        r = HostRecord("h")
        r.status_line("failed no tracker answered within 60s")
        assert r.kind == core.PEER_FAILED

    def test_late_failed_line_keeps_first_reason(self):
        """An interrupted host keeps that reason when its peer then says `failed`."""
        r = HostRecord("h")
        r.fail(core.INTERRUPTED, "interrupted by SIGINT")
        r.status_line("failed interrupted before the download completed")
        assert (r.kind, r.reason) == (core.INTERRUPTED, "interrupted by SIGINT")


def ended(lines, code, sig=None, said=False, murder="murder"):
    r = HostRecord("h")
    for line in lines:
        r.log_line(line)
    r.peer_said = r.peer_said or said
    return classify_exit(r, code, sig, murder)


class ClassifyTests:
    """One-line reasons from ssh's exit status and stderr."""

    def test_host_key(self):
        """Unknown or changed host keys are refused, never retried."""
        kind, reason, retry = ended(
            ["No ED25519 host key is known for 10.0.0.1 and you have requested strict "
             "checking.", "Host key verification failed."], 255)
        assert (kind, retry) == (core.HOST_KEY, False)
        assert reason == "host key refused: Host key verification failed."

    def test_unreachable_is_retried(self):
        """Refused/timed-out connections are unreachable and retryable."""
        kind, reason, retry = ended(
            ["ssh: connect to host 10.0.0.9 port 22: Connection refused"], 255)
        assert (kind, retry) == (core.UNREACHABLE, True)
        assert "Connection refused" in reason

    def test_auth(self):
        """Permission denied is an authentication failure, not retried."""
        assert ended(["root@h: Permission denied (publickey)."], 255)[:1] == (core.AUTH,)

    def test_not_installed(self):
        """Status 127 before the peer said anything: murder is not installed."""
        kind, reason, _ = ended(["sh: 1: exec: /opt/murder: not found"], 127,
                                murder="/opt/murder")
        assert kind == core.NOT_INSTALLED and "/opt/murder" in reason

    def test_too_old(self):
        """An old murder refusing the new options is `too old`."""
        kind, _, _ = ended(["murder peer: option --stop-on-eof not recognized"], 2)
        assert kind == core.TOO_OLD

    def test_peer_died(self):
        """A session lost after the peer started is a peer failure, not retried."""
        kind, reason, retry = ended(["murder peer: peer for x on port 1"], 255)
        assert (kind, retry) == (core.PEER_FAILED, False)
        assert "without a verdict" in reason

    def test_own_verdict_wins(self):
        """The peer's own `failed` line is the reason, whatever the exit status."""
        r = HostRecord("h")
        r.status_line("failed storage error at /x: no space left on device")
        assert classify_exit(r, 1, None)[0] == core.DISK_FULL

    def test_then_failure(self):
        """--then's failure names its status and last words."""
        assert core.then_failure(3, None, ["oops"]) == "then-command failed with status 3: oops"
        assert core.then_failure(None, 9, []) == "then-command failed with signal 9"


class AggregateTests:
    """Fleet totals for the progress line."""

    def test_rate_eta_slowest(self):
        """Rate from progress between updates; ETA from what is left; slowest first."""
        records = [HostRecord(f"h{i}", state="running", total_pieces=10) for i in range(3)]
        agg = core.Aggregate(payload_bytes=1000)
        agg.update(records, 0.0)
        for r, p in zip(records, (2, 5, 10)):
            r.pieces = p
        records[2].succeed(1.0)
        stats = agg.update(records, 1.0)
        assert stats["done"] == 1 and stats["active"] == 2
        assert stats["rate"] == pytest.approx(1700.0)
        assert stats["eta"] == pytest.approx(1300 / 1700.0)
        assert [h for h, _, _ in stats["slowest"]] == ["h0", "h1"]
        assert "1/3 done, 0 failed, 2 in progress" in progress_text(stats, 1.0)

    def test_summary_and_table(self):
        """The summary counts failures; the table names each failed host once."""
        ok, bad = HostRecord("a"), HostRecord("b")
        ok.succeed(1.0)
        bad.fail(core.DISK_FULL, "disk full: no space left on device", 2.0)
        assert core.summary_line([ok], 3.0, 2**20) == "deployed 1.0 MiB to all 1 hosts in 3.0s"
        assert core.summary_line([ok, bad], 3.0, 2**20).startswith("FAILED: 1 of 2 hosts")
        table = core.failure_table([ok, bad])
        assert len(table) == 2 and table[1].split()[:2] == ["b", "disk-full"]


class TransportTests:
    """argv and remote command lines."""

    def test_ssh_argv(self):
        """-F, the user's -o before ours (ssh keeps the first), BatchMode, user, port, `--`."""
        t = Transport(ssh_config="/c", ssh_options=("ProxyJump=bastion",
                                                    "ServerAliveInterval=5"))
        argv = t.argv(Target("web1", "deploy", 2222), "echo hi")
        assert argv[:4] == ["ssh", "-T", "-F", "/c"]
        opts = [argv[i + 1] for i, a in enumerate(argv) if a == "-o"]
        assert opts[:2] == ["ProxyJump=bastion", "ServerAliveInterval=5"]
        assert "BatchMode=yes" in opts
        assert not any("StrictHostKeyChecking" in o for o in opts)
        assert argv[-3:] == ["--", "web1", "sh -c 'echo hi'"]
        assert argv[argv.index("-l") + 1] == "deploy" and argv[argv.index("-p") + 1] == "2222"

    def test_local_argv_and_dest(self):
        """The local transport runs sh -c here; {host} in DEST is the host's name."""
        assert Transport(kind="local").argv(Target("a"), "true") == ["sh", "-c", "true"]
        assert host_dest("/srv/{host}/rel", Target("h1", "u", 22)) == "/srv/u@h1_22/rel"

    def test_peer_command_quotes_dest(self):
        """DEST with spaces stays one word; the torrent comes on stdin; status on fd 3."""
        words = shlex.split(peer_command("/opt/venv/bin/murder", "/srv/my app"))
        assert words[:4] == ["mkdir", "-p", "--", "/srv/my app"]
        i = words.index("peer")
        assert words[i - 3:i] == ["exec", "env", "/opt/venv/bin/murder"]
        assert words[i + 1:i + 4] == ["--torrent", "-", "--stop-on-eof"]
        assert words[words.index("--destination") + 1] == "/srv/my app"
        assert words[-2:] == ["3>&1", "1>&2"]

    def test_then_command_runs(self, tmp_path):
        """--then runs in DEST with $MURDER_PAYLOAD set (checked by a real sh)."""
        cmd = then_command('echo "$PWD $MURDER_PAYLOAD"', str(tmp_path), "/x/it's")
        out = subprocess.run(["sh", "-c", cmd], capture_output=True, text=True).stdout
        assert out == f"{tmp_path} /x/it's\n"


class DisplayTests:
    """Timestamped lines off a terminal, one redrawn line on it."""

    def test_non_tty_lines(self):
        """Events are timestamped lines; quiet keeps failures only."""
        out = io.StringIO()
        d = Display(Clock(), out)
        r = HostRecord("web1")
        d.event(r, "verified /srv/x")
        assert out.getvalue().endswith(" web1: verified /srv/x\n")
        quiet = io.StringIO()
        d = Display(Clock(), quiet, quiet=True)
        d.event(r, "verified")
        r.fail(core.PEER_FAILED, "peer failed: x")
        d.event(r, "peer failed: x")
        assert quiet.getvalue().count("\n") == 1 and "peer failed" in quiet.getvalue()

    def test_tty_redraws(self):
        """On a terminal the progress line is redrawn with \\r and erased at stop."""
        class Tty(io.StringIO):
            def isatty(self):
                return True

        class Fake:
            records = [HostRecord("a", state="running", total_pieces=4, pieces=1)]
            started = 0.0

            class meta:
                total_length = 100

        out, clock = Tty(), Clock()
        d = Display(clock, out)
        d.start(Fake)
        clock.advance(0.5)
        assert out.getvalue().startswith("\r\x1b[K0/1 done")
        d.stop()
        assert out.getvalue().endswith("\r\x1b[K")


class PeerStdinTests:
    """``murder peer --torrent -`` reads exactly one torrent from stdin."""

    def test_stops_at_the_end(self):
        """Bytes after the torrent stay unread (the pipe remains the controller's)."""
        torrent = bencode.encode({b"info": {b"name": b"x", b"length": 1}})
        stream = io.BufferedReader(io.BytesIO(torrent + b"LATER"), buffer_size=7)
        assert read_torrent_stream(stream) == torrent
        assert bencode.value_end(torrent[:-1]) is None
        assert bencode.value_end(b"4:spam rest") == 6

    def test_truncated(self):
        """EOF before the torrent ends is an error, not a hang."""
        with pytest.raises(MetainfoError, match="stdin ended"):
            read_torrent_stream(io.BufferedReader(io.BytesIO(b"d4:info")))


class DeployOptionsTests:
    """Command-line validation."""

    def test_hosts_file_stdin_and_flags(self, tmp_path, monkeypatch):
        """--hosts - reads stdin; --host adds; duplicates across both are dropped."""
        payload = tmp_path / "p"
        payload.write_bytes(b"x")
        monkeypatch.setattr(sys, "stdin", io.StringIO("a\n# c\nb\n"))
        o = DeployOptions()
        o.parseOptions(["--hosts", "-", "--host", "a", "-H", "c:2200", str(payload), "/srv"])
        assert [t.name for t in o["targets"]] == ["a", "b", "c:2200"]

    @pytest.mark.parametrize("args,message", [
        ([], "no hosts"), (["--parallel", "0", "-H", "a"], "--parallel"),
        (["-H", "a b"], "not a host"), (["--transport", "telnet", "-H", "a"], "--transport")])
    def test_refused(self, tmp_path, args, message):
        """Bad options fail with a clear one-line message."""
        payload = tmp_path / "p"
        payload.write_bytes(b"x")
        with pytest.raises(usage.UsageError, match=message):
            DeployOptions().parseOptions([*args, str(payload), "/srv"])

    def test_cli_help(self):
        """`murder deploy --help` explains the command."""
        out = subprocess.run([MURDER, "deploy", "--help"], capture_output=True, text=True,
                             timeout=30).stdout
        assert "murder deploy [options] PAYLOAD DEST" in out and "--then" in out


@pytest.mark.integration
class PeerStdinControlTests:
    """``murder peer --torrent - --stop-on-eof`` as `murder deploy` drives it."""

    def test_eof_stops_the_peer_cleanly(self, tmp_path):
        """The torrent arrives on stdin and the pipe stays open; closing it stops
        the peer as SIGTERM would: a `failed interrupted …` status line, exit 1."""
        import select

        from murder import metainfo

        (tmp_path / "p.bin").write_bytes(os.urandom(300_000))
        torrent = metainfo.parse(bencode.encode(metainfo.create(
            str(tmp_path / "p.bin"), "http://127.0.0.1:9/announce"))).encode()
        (tmp_path / "d").mkdir()
        r, w = os.pipe()
        proc = subprocess.Popen(
            [MURDER, "peer", "--torrent", "-", "--stop-on-eof", "--destination",
             str(tmp_path / "d"), "--status-fd", str(w), "--tracker-timeout", "60"],
            stdin=subprocess.PIPE, stderr=subprocess.PIPE, pass_fds=(w,))
        os.close(w)
        try:
            proc.stdin.write(torrent)
            proc.stdin.flush()
            seen = b""
            while b"peer for p.bin" not in seen:  # it parsed the torrent and listens
                ready, _, _ = select.select([proc.stderr], [], [], 30)
                assert ready, seen
                chunk = os.read(proc.stderr.fileno(), 4096)
                assert chunk, seen
                seen += chunk
            assert proc.poll() is None
            proc.stdin.close()
            assert proc.wait(30) == 1
            with os.fdopen(r) as status:
                assert status.read() == "failed interrupted before the download completed\n"
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


class _FakeProcessTransport:
    def __init__(self) -> None:
        self.written = b""
        self.stdin_closed = False
        self.signals: list[str] = []

    def write(self, data: bytes) -> None:
        self.written += data

    def closeStdin(self) -> None:  # noqa: N802
        self.stdin_closed = True

    def signalProcess(self, sig: str) -> None:  # noqa: N802
        self.signals.append(sig)


class _ProcessClock(Clock):
    """A Clock that also 'spawns' processes: records them, runs nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.spawned: list = []

    def spawnProcess(self, proto, executable, args, env=None):  # noqa: N802
        proto.transport = _FakeProcessTransport()
        self.spawned.append((proto, args))
        return proto.transport


def _end(proto, code: int) -> None:
    from twisted.internet.error import ProcessTerminated
    from twisted.python.failure import Failure

    proto.processEnded(Failure(ProcessTerminated(exitCode=code)))


class SchedulingTests:
    """The orchestrator's session bookkeeping, with fake processes and a Clock."""

    def deployment(self, n: int, **kw):
        from murder.deploy.orchestrator import DeployConfig, Deployment

        config = DeployConfig(payload="/p", dest="/srv", transport=Transport(kind="local"),
                              targets=tuple(Target(f"h{i}") for i in range(n)), **kw)
        clock = _ProcessClock()
        d = Deployment(config, clock)
        d.hosts.torrent_bytes = b"d4:infod6:lengthi1eee"  # what the sessions are sent
        d.meta = object()
        return d, clock

    def test_release_longest_verified_when_hosts_wait(self):
        """--parallel 2 with 3 hosts: the third waits; when one verifies, its session
        is closed (seeding ends) and the third opens once it has ended."""
        d, clock = self.deployment(3, parallel=2)
        d.hosts.pump()
        assert [args[-1][:5] for _, args in clock.spawned] == ["mkdir", "mkdir"]
        first, second = clock.spawned[0][0], clock.spawned[1][0]
        assert first.transport.written == d.torrent_bytes
        first.childDataReceived(1, b"complete /srv/x\n")
        assert d.records[0].state == core.VERIFIED
        assert first.transport.stdin_closed and not second.transport.stdin_closed
        assert len(clock.spawned) == 2
        _end(first, 0)
        assert len(clock.spawned) == 3
        assert d.records[0].state == core.VERIFIED  # its later exit changes nothing

    def test_connection_failure_is_retried_then_named(self):
        """A refused connection is retried after a delay, --retries times, then fails."""
        d, clock = self.deployment(1, retries=1, retry_delay=2.0)
        d.hosts.pump()
        proto = clock.spawned[0][0]
        proto.childDataReceived(2, b"ssh: connect to host h0 port 22: Connection refused\n")
        _end(proto, 255)
        assert d.records[0].state == "waiting" and len(clock.spawned) == 1
        clock.advance(2.0)
        assert len(clock.spawned) == 2 and d.records[0].attempts == 2
        proto = clock.spawned[1][0]
        proto.childDataReceived(2, b"ssh: connect to host h0 port 22: Connection refused\n")
        _end(proto, 255)
        assert d.records[0].state == core.FAILED and d.records[0].kind == core.UNREACHABLE
        assert len(clock.spawned) == 2

    def test_interrupt_closes_every_session(self):
        """SIGINT: unfinished hosts fail as interrupted, every stdin is closed, and
        lingering ssh clients get SIGTERM after the grace period."""
        from murder.deploy.orchestrator import STOP_GRACE

        d, clock = self.deployment(2)
        d.hosts.pump()
        d.interrupt(2)
        assert all(r.kind == core.INTERRUPTED for r in d.records)
        assert all(p.transport.stdin_closed for p, _ in clock.spawned)
        clock.advance(STOP_GRACE)
        assert all(p.transport.signals == ["TERM"] for p, _ in clock.spawned)

    def test_deploy_ends_when_a_then_command_ends_last(self):
        """Interrupted while --then runs: once the session and then the --then
        command have ended, the deploy ends (it used to wait forever when the
        --then command was the last process to end)."""
        d, clock = self.deployment(1, then="true")
        d.hosts.pump()
        session = clock.spawned[0][0]
        session.childDataReceived(1, b"complete /srv/x\n")
        assert d.records[0].state == "then" and len(clock.spawned) == 2
        then = clock.spawned[1][0]
        d.interrupt(2)
        assert session.transport.stdin_closed and then.transport.stdin_closed
        _end(session, 0)
        assert not d._done.called  # the --then command still runs
        _end(then, 0)
        assert d._done.called and d.records[0].kind == core.INTERRUPTED


class OriginTests:
    """What a deploy runs on this machine: the tracker's announce URL and service."""

    def config(self, **kw):
        from murder.deploy.orchestrator import DeployConfig

        return DeployConfig(payload="/p", dest="/srv", targets=(Target("h0"),), **kw)

    def test_named_tracker_starts_none_here(self):
        """--tracker URL: hosts announce there and no tracker listens here."""
        from twisted.internet.testing import MemoryReactorClock

        from murder.deploy.origin import Origin

        reactor = MemoryReactorClock()
        origin = Origin(self.config(tracker="http://t.example:6969/announce"), reactor)
        assert origin.start_tracker() == "http://t.example:6969/announce"
        assert origin.announce_url == "http://t.example:6969/announce"
        assert reactor.tcpServers == []

    def test_local_tracker_on_the_announce_host(self):
        """Without --tracker a tracker listens on --tracker-port; an IPv6 announce
        host is bracketed in the URL; stop() stops the tracker."""
        from twisted.internet import defer
        from twisted.internet.testing import MemoryReactorClock

        from murder.deploy.origin import Origin

        reactor = MemoryReactorClock()
        origin = Origin(self.config(announce_host="::1", tracker_port=7001), reactor)
        assert origin.start_tracker() == "http://[::1]:7001/announce"
        assert [port for port, *_ in reactor.tcpServers] == [7001]
        stopped = []
        defer.ensureDeferred(origin.stop()).addCallback(stopped.append)
        assert stopped == [None] and not origin._tracker_service.running
