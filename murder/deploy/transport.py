"""How a command reaches a host: the system ``ssh`` client, or a local shell.

Only argv and command strings are built here (pure, testable).  The remote
side always runs ``sh -c '…'`` so the user's login shell (bash, zsh, fish,
csh) only has to pass one quoted word on.  Host keys are never relaxed: we
add ``BatchMode=yes`` (no prompt can hang a deploy) and keepalives, and the
user's ``--ssh-option``s come first, so theirs win (ssh keeps the first value).
"""

from __future__ import annotations

import re
import shlex
import socket
import subprocess
from dataclasses import dataclass

from murder.deploy.hosts import Target

#: Options every session gets after the user's own (ssh keeps the first value
#: given, so a user's ``--ssh-option ServerAliveInterval=…`` wins).
DEFAULT_SSH_OPTIONS = ("BatchMode=yes", "ServerAliveInterval=15", "ServerAliveCountMax=4")

#: Seconds a remote peer seeds at most after it verified; in practice the
#: deploy ends it sooner by closing the session's stdin.
REMOTE_SEED_TIME = 86400


@dataclass(frozen=True)
class Transport:
    """Builds the argv that runs a shell command on one target."""

    kind: str = "ssh"  # "ssh" or "local"
    ssh: str = "ssh"
    ssh_config: str | None = None
    ssh_options: tuple[str, ...] = ()

    def ssh_base(self, target: Target) -> list[str]:
        argv = [self.ssh, "-T"]
        if self.ssh_config:
            argv += ["-F", self.ssh_config]
        for opt in (*self.ssh_options, *DEFAULT_SSH_OPTIONS):
            argv += ["-o", opt]
        if target.user:
            argv += ["-l", target.user]
        if target.port is not None:
            argv += ["-p", str(target.port)]
        return argv

    def argv(self, target: Target, command: str) -> list[str]:
        """argv running ``command`` (a POSIX sh command line) on ``target``."""
        if self.kind == "local":
            return ["sh", "-c", command]
        return [*self.ssh_base(target), "--", target.host, "sh -c " + shlex.quote(command)]


def host_dest(dest: str, target: Target) -> str:
    """DEST for one host: ``{host}`` is replaced by its name (local transport:
    every "host" shares one filesystem, so each needs its own directory)."""
    safe = re.sub(r"[^A-Za-z0-9._@-]", "_", target.name)
    return dest.replace("{host}", safe)


def peer_command(remote_murder: str, dest: str, tracker_timeout: float = 60.0,
                 stall_timeout: float | None = None) -> str:
    """The remote side of a session: make DEST, run the peer on the torrent
    that follows on stdin, its verdict on the session's stdout (fd 3) and
    its log and progress on stderr; closing stdin ends it cleanly."""
    q = shlex.quote(dest)
    extra = f" --stall-timeout {stall_timeout:g}" if stall_timeout is not None else ""
    # `exec env`: the peer replaces the shell (signals and exit status are its
    # own), and a --remote-murder like `MURDER_TRUST=/etc/keys murder` works.
    return (f"mkdir -p -- {q} && exec env {remote_murder} peer --torrent - --stop-on-eof "
            f"--destination {q} --status-fd 3 --progress-interval 1 "
            f"--seed-time {REMOTE_SEED_TIME} --tracker-timeout {tracker_timeout:g}{extra} "
            f"3>&1 1>&2")


def then_command(command: str, dest: str, path: str) -> str:
    """``--then CMD`` on a host: run in DEST with ``$MURDER_PAYLOAD`` set to the
    verified payload's path."""
    return (f"cd -- {shlex.quote(dest)} && MURDER_PAYLOAD={shlex.quote(path)} && "
            f"export MURDER_PAYLOAD && {command}")


def route_source(transport: Transport, target: Target, timeout: float = 10.0) -> str:
    """Address of this machine on the route to ``target`` (what hosts reach us at).

    The host name goes through ``ssh -G`` first, so ``Host`` aliases with a
    ``HostName`` in the SSH configuration resolve as ssh would resolve them.
    No packet is sent: connecting a UDP socket only picks the route.
    """
    if transport.kind == "local":
        return "127.0.0.1"
    host, port = target.host, target.port or 22
    try:
        out = subprocess.run([*transport.ssh_base(target), "-G", "--", target.host],
                             capture_output=True, text=True, timeout=timeout,
                             stdin=subprocess.DEVNULL).stdout
        for line in out.splitlines():
            key, _, value = line.partition(" ")
            if key == "hostname" and value:
                host = value.strip()
            elif key == "port" and value.strip().isdigit():
                port = int(value)
    except (OSError, subprocess.TimeoutExpired):
        pass
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    family, _, _, _, addr = infos[0]
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.connect(addr)
        source: str = s.getsockname()[0]
        return source
