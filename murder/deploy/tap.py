"""``murder deploy``: options, the foreground run and the end table.

The JSON report (``--report``) is written by :mod:`murder.deploy.report`.
"""

from __future__ import annotations

import os
import sys

from twisted.python import usage

from murder.deploy import core
from murder.deploy.hosts import parse_host_lines, parse_target, unique
from murder.deploy.orchestrator import DeployConfig, Deployment
from murder.deploy.report import write_report
from murder.deploy.transport import Transport, route_source
from murder.errors import ConfigError

#: Default of --parallel.  Sessions stay open while verified hosts seed, so a
#: limit below the fleet size splits the swarm into waves (measured at N=16,
#: 64 MiB at 40 Mbit/s: 4 sessions 2.17x, 8 sessions 1.31x the time of 16;
#: bench/README.md).  64 keeps fleets of up to 64 hosts in one swarm and bounds
#: the local ssh clients beyond that.
DEFAULT_PARALLEL = 64


class DeployOptions(usage.Options):
    """``murder deploy [options] PAYLOAD DEST``."""

    synopsis = "murder deploy [options] PAYLOAD DEST"
    longdesc = ("Put PAYLOAD (a file or directory here) at DEST/<name> on every host, over "
                "BitTorrent, started over SSH: a tracker and a seeder run here, each host "
                "runs `murder peer` with the torrent sent on the session's stdin. Verified "
                "hosts seed until the deploy ends; then every remote process exits. Exit "
                "status 0 only when every host verified (and its --then succeeded); failed "
                "hosts are named with one reason each. Host keys are checked as your "
                "OpenSSH configuration says (BatchMode on).")
    optParameters = [
        ["hosts", "h", None, "File of hosts, one [user@]host[:port] a line, # comments "
                             "('-': stdin)."],
        ["ssh-config", "F", None, "SSH configuration file (ssh -F)."],
        ["announce-host", None, None, "Address the hosts reach this machine at (default: "
                                      "the source address of the route to the first host)."],
        ["tracker", None, None, "Use this tracker's announce URL instead of starting one."],
        ["tracker-port", None, 0, "Port of the tracker started here (0: any free port).", int],
        ["sign", None, None, "Ed25519 private key (PEM) to sign the torrent with."],
        ["auth-secret", None, None, "Tracker announce secret file (as make-torrent's)."],
        ["remote-murder", None, "murder", "The murder command on the hosts."],
        ["parallel", "P", DEFAULT_PARALLEL,
         "Most SSH sessions open at once (verified hosts keep theirs to seed; when "
         "hosts wait, the longest-verified one is released).", int],
        ["retries", None, 2, "Retries of a host whose SSH connection failed.", int],
        ["timeout", None, None, "Seconds for the whole deploy (default: none).", float],
        ["then", None, None, "Command run on each host (in DEST, $MURDER_PAYLOAD set) once "
                             "its payload verified; its status is part of the result."],
        ["report", None, None, "Write a JSON report (per host: result, reason, times, "
                               "bytes) to this file."],
        ["transport", None, "ssh", "ssh, or local: run each 'host' as a local process "
                                   "(demos, tests; DEST may contain {host})."],
        ["ssh-command", None, "ssh", "The ssh client to run."],
        ["tracker-timeout", None, 60.0, "Seconds peers may wait for the tracker.", float],
    ]
    optFlags = [["quiet", "q", "Only failures and the summary."]]

    def __init__(self) -> None:
        super().__init__()
        self["host"] = []
        self["ssh-option"] = []

    def opt_host(self, spec: str) -> None:
        """A host, [user@]host[:port] (repeatable)."""
        self["host"].append(spec)

    opt_H = opt_host  # noqa: N815 (pssh's letters: -h FILE, -H HOST)

    def opt_ssh_option(self, option: str) -> None:
        """An ssh -o option, e.g. ProxyJump=bastion (repeatable)."""
        self["ssh-option"].append(option)

    opt_o = opt_ssh_option

    def parseArgs(self, payload: str, dest: str) -> None:  # type: ignore[override]  # noqa: N802
        self["payload"] = payload
        self["dest"] = dest

    def postOptions(self) -> None:  # noqa: N802
        if not os.path.exists(self["payload"]):
            raise usage.UsageError(f"payload {self['payload']} does not exist")
        for key in ("sign", "auth-secret", "ssh-config"):
            if self[key] and not os.path.isfile(self[key]):
                raise usage.UsageError(f"--{key} {self[key]}: no such file")
        if self["transport"] not in ("ssh", "local"):
            raise usage.UsageError("--transport must be ssh or local")
        if self["parallel"] < 1:
            raise usage.UsageError("--parallel must be at least 1")
        if self["retries"] < 0:
            raise usage.UsageError("--retries cannot be negative")
        if self["timeout"] is not None and not self["timeout"] > 0:
            raise usage.UsageError("--timeout must be positive")
        targets = []
        try:
            if self["hosts"]:
                if self["hosts"] == "-":
                    text, source = sys.stdin.read(), "stdin"
                else:
                    with open(self["hosts"], encoding="utf-8") as f:
                        text, source = f.read(), self["hosts"]
                targets += parse_host_lines(text, source)
            targets += [parse_target(h) for h in self["host"]]
        except OSError as e:
            raise usage.UsageError(f"cannot read --hosts {self['hosts']}: {e.strerror}") from None
        except ConfigError as e:
            raise usage.UsageError(str(e)) from None
        self["targets"] = tuple(unique(targets))
        if not self["targets"]:
            raise usage.UsageError("no hosts: give --hosts FILE and/or --host H")

    def config(self) -> DeployConfig:
        """The frozen configuration (the announce address is looked up here)."""
        transport = Transport(kind=self["transport"], ssh=self["ssh-command"],
                              ssh_config=self["ssh-config"],
                              ssh_options=tuple(self["ssh-option"]))
        announce = self["announce-host"]
        if announce is None:  # also with --tracker: the seeder announces this address
            try:
                announce = route_source(transport, self["targets"][0])
            except OSError as e:
                raise ConfigError(f"cannot find this machine's address towards "
                                  f"{self['targets'][0]} ({e}); give --announce-host") from None
        return DeployConfig(
            payload=os.path.abspath(self["payload"]), dest=self["dest"],
            targets=self["targets"], transport=transport, announce_host=announce,
            tracker=self["tracker"], tracker_port=self["tracker-port"], sign=self["sign"],
            auth_secret=self["auth-secret"], remote_murder=self["remote-murder"],
            parallel=self["parallel"], retries=self["retries"], timeout=self["timeout"],
            then=self["then"], tracker_timeout=self["tracker-timeout"])


def run_foreground(options: DeployOptions) -> int:
    """Run the deploy on the global reactor; print the table and summary."""
    import signal

    from twisted.internet import reactor

    from murder.deploy.display import Display, log_warnings

    config = options.config()
    out = sys.stdout
    log_warnings(sys.stderr)
    display = Display(reactor, out, quiet=bool(options["quiet"]))
    deployment = Deployment(config, reactor, display)
    result: dict = {}

    def done(records) -> None:
        result["records"] = records
        result["at"] = reactor.seconds()
        reactor.stop()

    def handlers() -> None:
        # After Twisted's own (it must keep SIGCHLD to reap the sessions).
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, lambda n, _f: reactor.callFromThread(  # type: ignore[attr-defined]
                deployment.interrupt, n))

    def start() -> None:
        reactor.callLater(0, handlers)
        deployment.run().addCallback(done)

    reactor.callWhenRunning(start)
    reactor.run()
    records = deployment.records
    finished = result.get("at", reactor.seconds())
    if options["report"]:
        write_report(options["report"], deployment, finished)
    setup_error = getattr(deployment, "setup_error", None)
    if setup_error:
        print(f"murder deploy: {setup_error}", file=sys.stderr)
    table = core.failure_table(records)
    if table:
        out.write("\n".join(table) + "\n")
    payload_bytes = deployment.meta.total_length if deployment.meta else 0
    out.write(core.summary_line(records, finished - deployment.started, payload_bytes) + "\n")
    out.flush()
    if deployment.interrupted_by is not None:
        return 128 + deployment.interrupted_by
    return 0 if all(r.state == core.VERIFIED for r in records) else 1
