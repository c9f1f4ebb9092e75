"""Command line of the tracker and the frozen config it becomes.

:class:`Options` only parses and validates (a ``usage.UsageError`` with a
clear message); its :attr:`~Options.config` is a :class:`TrackerConfig`,
which is all :func:`~murder.tracker.service.build_service` ever reads.
Shared by ``twistd murder-tracker`` and ``murder tracker`` (see
:mod:`murder.tracker.tap`).
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from typing import Any

from twisted.python import usage

from murder.auth import load_secret
from murder.errors import ConfigError
from murder.tracker.announce_codec import DEFAULT_TRUSTED_NETWORKS, TrustedNetworks
from murder.tracker.tls import server_endpoint


@dataclass(frozen=True)
class TrackerConfig:
    """Everything the tracker service needs, validated."""

    listen: str = "tcp:8998"
    dfile: str | None = "data"
    interval: int = 15
    min_interval: int = 5
    numwant_default: int = 500
    numwant_max: int = 500
    peer_timeout: float = 120.0
    expire_interval: float = 30.0
    allowed_dir: str | None = None
    allowed_rescan: float = 30.0
    save_interval: float = 300.0
    max_torrents: int = 10_000
    max_peers_per_torrent: int = 50_000
    max_peers: int = 200_000
    trusted_networks: tuple[str, ...] = DEFAULT_TRUSTED_NETWORKS
    verbose: bool = False
    #: Files holding announce secrets (any one of them may make a valid token).
    auth_secrets: tuple[str, ...] = ()
    #: PEM file of the CA(s) whose client certificates the TLS listener requires.
    client_ca: str | None = None
    #: Interval asked of leechers (None: ``interval``), for a live view this fresh.
    leecher_interval: int | None = 2
    #: Seconds without progress before a leecher shows as stalled.
    stall_after: float = 30.0
    #: UDP port of the BEP 15 tracker (None: no UDP) and the address it binds.
    udp_port: int | None = None
    udp_bind: str = ""
    #: ``redis://HOST:PORT/DB`` or ``unix:///path?db=N``: peers shared by several
    #: tracker processes (None: in memory, saved to the dfile).
    store: str | None = None
    #: Topology file (``CIDR LOCATION`` lines): rack-aware peer lists.
    topology: str | None = None
    #: Answer UDP announces with the C drain loop when it is built
    #: (``--no-udp-fastpath``: the pure-Python one, to compare).
    udp_fastpath: bool = True


def _endpoint_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:")


class Options(usage.Options):
    """Command line of the tracker (shared by twistd and ``murder tracker``)."""

    synopsis = "[options]"
    longdesc = ("HTTP BitTorrent tracker (BEP 3/23/48) for datacenter deploys. "
                "Announce URL: http://HOST:PORT/announce; status at / and /status.json. "
                "HTTPS: --listen ssl:PORT:privateKey=KEY.pem:certKey=CERT.pem (peers "
                "then use https://HOST:PORT/announce and --ca). Access control: "
                "--allowed-dir, --auth-secret (per-swarm tokens that `murder make-torrent "
                "--auth-secret` writes into the announce URL), --client-ca. "
                "See docs/trust.md.")
    optParameters = [
        ["port", "p", "8998", "TCP port to listen on (legacy shortcut)."],
        ["bind", None, None, "Address to listen on (legacy shortcut; default all)."],
        ["listen", None, None, "Twisted endpoint string, overrides --port/--bind "
                               "(e.g. tcp:8998, tcp6:8998:interface=\\:\\:, or for HTTPS "
                               "ssl:8998:privateKey=key.pem:certKey=cert.pem)."],
        ["client-ca", None, None, "With an ssl: --listen: PEM file of the CA certificate(s) "
                                  "that must have signed every client's certificate; "
                                  "clients without one cannot connect."],
        ["dfile", None, "data", "State file, loaded at start and saved periodically "
                                "('' to disable)."],
        ["interval", None, "15", "Seconds between announces asked of clients."],
        ["min-interval", None, None, "Minimum seconds between announces (default: "
                                     "min(5, interval))."],
        ["numwant-default", None, "500", "Peers returned when the client sends no numwant."],
        ["numwant-max", None, "500", "Most peers returned in one reply."],
        ["peer-timeout", None, "120", "Seconds without announce before a peer is dropped."],
        ["expire-interval", None, None, "Seconds between expiry sweeps "
                                        "(default: min(30, peer-timeout/4))."],
        ["allowed-dir", None, None, "Track only the torrents (*.torrent) in this directory."],
        ["allowed-rescan", None, "30", "Seconds between rescans of --allowed-dir."],
        ["save-interval", None, "300", "Seconds between dfile saves."],
        ["max-torrents", None, "10000", "Most torrents tracked at once."],
        ["max-peers-per-torrent", None, "50000", "Most peers in one torrent."],
        ["max-peers", None, "200000", "Most peers in total."],
        ["trusted-networks", None, ",".join(DEFAULT_TRUSTED_NETWORKS),
         "Comma-separated networks whose requests may set ip=."],
        ["leecher-interval", None, None, "Seconds between announces asked of peers still "
                                         "downloading, so the dashboard and /status.json are "
                                         "that fresh (default: min(2, interval); 0: use "
                                         "--interval)."],
        ["stall-after", None, "30", "Seconds without progress before the dashboard and "
                                    "/metrics show a downloading peer as stalled."],
        ["udp-port", None, None, "Also answer BEP 15 UDP announces on this port "
                                 "(announce URL udp://HOST:PORT/announce)."],
        ["udp-bind", None, None, "Address of the UDP port (default: --bind's, else all "
                                 "IPv4; :: for IPv6 and IPv4)."],
        ["store", None, None, "Keep peers in Redis, shared by every tracker process using "
                              "the same store: redis://HOST:PORT/DB or unix:///PATH?db=N "
                              "(default: in memory, saved to --dfile)."],
        ["topology", None, None, "File of 'CIDR LOCATION' lines (e.g. 10.1.3.0/24 "
                                 "dc1/row3/rack12): hand out the closest peers first, "
                                 "plus the seeders and a share of farther peers."],
    ]
    optFlags = [
        ["verbose", "v", "Log every announce and every HTTP request."],
        ["no-udp-fastpath", None, "Answer UDP announces in pure Python, not with the C "
                                  "drain loop (murder.tracker._udpfast), e.g. to compare."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["auth-secret"] = []

    def opt_auth_secret(self, path: str) -> None:
        self["auth-secret"].append(path)

    # One line: usage.Options shows a docstring's indentation verbatim.
    opt_auth_secret.__doc__ = (
        "File holding the shared announce secret: announces and scrapes must then "
        "carry the swarm's token (auth=HMAC-SHA256(secret, info hash), written into "
        "the announce URL by `murder make-torrent --auth-secret`); others get a "
        "failure reason. Repeatable: a token made with any of the secrets is valid "
        "(rotation).")

    def _int(self, name: str, low: int, high: int | None = None) -> int:
        raw = self[name]
        try:
            value = int(str(raw).strip())
        except ValueError:
            raise usage.UsageError(f"--{name} must be an integer, not {raw!r}") from None
        if value < low or (high is not None and value > high):
            bound = f"between {low} and {high}" if high is not None else f">= {low}"
            raise usage.UsageError(f"--{name} must be {bound}, not {value}")
        return value

    def _seconds(self, name: str, raw: Any = None) -> float:
        raw = self[name] if raw is None else raw
        try:
            value = float(str(raw).strip())
        except ValueError:
            raise usage.UsageError(f"--{name} must be a number of seconds, not {raw!r}") from None
        if not 0 < value < 10**7:
            raise usage.UsageError(f"--{name} must be a positive number of seconds, not {raw}")
        return value

    def _listen(self) -> str:
        if self["listen"]:
            description = self["listen"]
            from twisted.internet.endpoints import serverFromString
            from twisted.internet.testing import MemoryReactor

            try:  # parse only: a MemoryReactor never opens a socket
                serverFromString(MemoryReactor(), description)
            except Exception as e:  # ssl: also loads key and certificate (OSError, SSL errors)
                raise usage.UsageError(f"--listen {description!r} is not a server "
                                       f"endpoint string: {e}") from None
            return description
        port = self._int("port", 0, 65535)
        bind = (self["bind"] or "").strip()
        if not bind:
            return f"tcp:{port}"
        try:
            address = ipaddress.ip_address(bind)
        except ValueError:
            raise usage.UsageError(f"--bind must be an IP address, not {bind!r}") from None
        kind = "tcp6" if address.version == 6 else "tcp"
        return f"{kind}:{port}:interface={_endpoint_escape(str(address))}"

    def postOptions(self) -> None:  # noqa: N802 (Twisted API)
        """Validate every value and build :attr:`config`."""
        interval = self._int("interval", 1, 86400)
        min_interval = (self._int("min-interval", 1, interval) if self["min-interval"]
                        else min(5, interval))
        numwant_max = self._int("numwant-max", 0, 10_000)
        numwant_default = min(self._int("numwant-default", 0, 10_000), numwant_max)
        peer_timeout = self._seconds("peer-timeout")
        expire_interval = (self._seconds("expire-interval") if self["expire-interval"]
                           else min(30.0, peer_timeout / 4))
        dfile = self["dfile"] or None
        if dfile is not None:
            parent = os.path.dirname(os.path.abspath(dfile))
            if not os.path.isdir(parent):
                raise usage.UsageError(f"--dfile {dfile!r}: directory {parent} does not exist")
            if os.path.isdir(dfile):
                raise usage.UsageError(f"--dfile {dfile!r} is a directory")
        allowed_dir = self["allowed-dir"]
        if allowed_dir is not None and not os.path.isdir(allowed_dir):
            raise usage.UsageError(f"--allowed-dir {allowed_dir!r} is not a directory")
        networks = tuple(n.strip() for n in str(self["trusted-networks"]).split(",") if n.strip())
        try:
            TrustedNetworks(networks)
        except ValueError as e:
            raise usage.UsageError(f"--trusted-networks: {e}") from None
        auth_secrets = tuple(self["auth-secret"])
        try:
            for path in auth_secrets:
                load_secret(path)  # refuse a bad secret now, not at the first announce
        except ConfigError as e:
            raise usage.UsageError(f"--auth-secret: {e}") from None
        listen = self._listen()
        client_ca = self["client-ca"]
        if client_ca is not None:
            from twisted.internet.testing import MemoryReactor

            try:
                server_endpoint(MemoryReactor(), listen, client_ca)
            except ConfigError as e:
                raise usage.UsageError(f"--client-ca: {e}") from None
        udp_port = self._int("udp-port", 0, 65535) if self["udp-port"] else None
        udp_bind = (self["udp-bind"] or self["bind"] or "").strip()
        if udp_bind:
            try:
                udp_bind = str(ipaddress.ip_address(udp_bind))
            except ValueError:
                raise usage.UsageError(f"--udp-bind must be an IP address, not {udp_bind!r}"
                                       ) from None
        store_url = self["store"] or None
        if store_url is not None:
            from murder.tracker.redisstore import parse_store_url

            try:
                parse_store_url(store_url)
            except ConfigError as e:
                raise usage.UsageError(f"--store: {e}") from None
        self.config = TrackerConfig(
            listen=listen, dfile=dfile, interval=interval, min_interval=min_interval,
            numwant_default=numwant_default, numwant_max=numwant_max,
            peer_timeout=peer_timeout, expire_interval=expire_interval,
            allowed_dir=allowed_dir, allowed_rescan=self._seconds("allowed-rescan"),
            save_interval=self._seconds("save-interval"),
            max_torrents=self._int("max-torrents", 1),
            max_peers_per_torrent=self._int("max-peers-per-torrent", 1),
            max_peers=self._int("max-peers", 1),
            trusted_networks=networks, verbose=bool(self["verbose"]),
            auth_secrets=auth_secrets, client_ca=client_ca,
            leecher_interval=(self._int("leecher-interval", 0, interval)
                              if self["leecher-interval"] is not None else min(2, interval))
                             or None,
            stall_after=self._seconds("stall-after"),
            udp_port=udp_port, udp_bind=udp_bind, store=store_url,
            topology=self._topology(),
            udp_fastpath=not self["no-udp-fastpath"],
        )

    def _topology(self) -> str | None:
        """Check the --topology file now, so a bad line fails the start."""
        path = self["topology"]
        if path and self["store"]:
            raise usage.UsageError("--topology works with the in-memory store only, "
                                   "not with --store")
        if path:
            from murder.tracker.topology import load

            try:
                load(path)
            except ConfigError as e:
                raise usage.UsageError(f"--topology: {e}") from None
        return path or None


__all__ = ["Options", "TrackerConfig"]
