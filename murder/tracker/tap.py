"""``twistd murder-tracker`` and ``murder tracker``: options, config, service.

:class:`Options` only parses and validates; :class:`TrackerConfig` is the
frozen result passed down.  :func:`makeService` builds a ``MultiService`` of
the state (dfile, expiry, allow-list rescans, periodic saves) and the HTTP
listener; :func:`runForeground` runs the same service on the global reactor
for the ``murder`` command.
"""

from __future__ import annotations

import gc
import ipaddress
import os
import sys
from dataclasses import dataclass, replace
from typing import Any, Callable

from twisted.application import service
from twisted.application.internet import StreamServerEndpointService
from twisted.internet.interfaces import IReactorCore, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python import usage

from murder import metainfo
from murder.errors import ConfigError, MetainfoError
from murder.tracker.announce import DEFAULT_TRUSTED_NETWORKS, TrustedNetworks
from murder.tracker.auth import Authoriser, load_secret
from murder.tracker.fasthttp import TrackerHTTPFactory
from murder.tracker.store import PeerStore, TorrentInfo, load_dfile, save_dfile
from murder.tracker.web import TrackerApp

log = Logger()


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


def _load_ca_certificates(path: str) -> list[Any]:
    """Every certificate in the PEM file ``path``, as Twisted ``Certificate`` objects."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding
    from twisted.internet.ssl import Certificate

    try:
        with open(path, "rb") as f:
            certs = x509.load_pem_x509_certificates(f.read())
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror or e}") from None
    except ValueError as e:
        raise ConfigError(f"{path} holds no PEM certificate ({e})") from None
    return [Certificate.loadPEM(c.public_bytes(Encoding.PEM)) for c in certs]


def server_endpoint(reactor: Any, listen: str, client_ca: str | None = None) -> Any:
    """The listening endpoint for ``listen``; with ``client_ca``, TLS that requires
    a client certificate signed by one of the CAs in that PEM file.

    Twisted's ``ssl:`` endpoint string cannot ask for client certificates, so
    the server's key and certificate (loaded by the string parser) are reused
    in a new ``CertificateOptions`` with ``trustRoot``, which makes OpenSSL
    demand and verify a client certificate during the handshake: a client
    without a valid one never gets to send a request.
    """
    from twisted.internet.endpoints import SSL4ServerEndpoint, serverFromString

    endpoint = serverFromString(reactor, listen)
    if client_ca is None:
        return endpoint
    if not isinstance(endpoint, SSL4ServerEndpoint):
        raise ConfigError(f"needs an ssl: --listen endpoint, not {listen!r}")
    from twisted.internet.ssl import CertificateOptions, trustRootFromCertificates

    # The endpoint keeps its arguments in private attributes; read them once
    # here, so a Twisted change fails at start-up (and in the tests), not later.
    server = getattr(endpoint, "_sslContextFactory", None)
    if not isinstance(server, CertificateOptions):
        raise ConfigError("cannot add client verification to this ssl: endpoint")
    options = CertificateOptions(
        privateKey=server.privateKey, certificate=server.certificate,
        extraCertChain=server.extraCertChain or None, dhParameters=server.dhParameters,
        trustRoot=trustRootFromCertificates(_load_ca_certificates(client_ca)))
    return SSL4ServerEndpoint(reactor, endpoint._port, options,
                              backlog=endpoint._backlog, interface=endpoint._interface)


class AllowedDir:
    """Scans a directory of torrents; files unchanged since the last scan are not re-read."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._seen: dict[str, tuple[tuple[int, int], bytes | None, TorrentInfo | None]] = {}

    def scan(self) -> dict[bytes, TorrentInfo]:
        """``{info_hash: TorrentInfo}`` of the loadable ``*.torrent`` files."""
        seen: dict[str, tuple[tuple[int, int], bytes | None, TorrentInfo | None]] = {}
        with os.scandir(self.path) as entries:
            for entry in entries:
                if not entry.name.endswith(".torrent") or not entry.is_file():
                    continue
                stat = entry.stat()
                stamp = (stat.st_mtime_ns, stat.st_size)
                old = self._seen.get(entry.path)
                if old is not None and old[0] == stamp:
                    seen[entry.path] = old
                    continue
                try:
                    meta = metainfo.load(entry.path)
                except MetainfoError as e:
                    log.warn("ignoring broken torrent {path}: {error}", path=entry.path,
                             error=str(e))
                    seen[entry.path] = (stamp, None, None)
                    continue
                seen[entry.path] = (stamp, meta.info_hash,
                                    TorrentInfo(meta.name, meta.total_length))
        added = len(set(seen) - set(self._seen))
        if added or len(seen) != len(self._seen):
            log.info("allowed dir {path}: {count} torrent files", path=self.path,
                     count=len(seen))
        self._seen = seen
        return {ih: info for _, ih, info in seen.values() if ih is not None and info}


def _guarded(what: str, job: Callable[[], Any]) -> Callable[[], None]:
    """Wrap a periodic job so one failing run is logged and the loop lives on."""
    def run() -> None:
        try:
            job()
        except Exception:
            log.failure("periodic {what} failed; will retry", what=what)
    return run


class TrackerStateService(service.Service):
    """Owns the store: loads the dfile, runs expiry/rescans/saves, saves on stop."""

    name = "tracker-state"

    def __init__(self, store: PeerStore, config: TrackerConfig, clock: IReactorTime,
                 save_timer: Any = None) -> None:
        self.store = store
        self.config = config
        self.clock = clock
        #: A prometheus_client Histogram (or None) timing each dfile save.
        self.save_timer = save_timer
        self.allowed_dir = AllowedDir(config.allowed_dir) if config.allowed_dir else None
        self._loops: list[LoopingCall] = []

    def rescan(self) -> None:
        if self.allowed_dir is not None:
            self.store.set_allowed(self.allowed_dir.scan())

    def save(self) -> None:
        if self.config.dfile:
            if self.save_timer is None:
                save_dfile(self.store, self.config.dfile)
            else:
                with self.save_timer.time():
                    save_dfile(self.store, self.config.dfile)

    def startService(self) -> None:  # noqa: N802
        super().startService()
        _guarded("allowed-dir scan", self.rescan)()
        if self.config.dfile:
            load_dfile(self.store, self.config.dfile)
        jobs = [("expiry", self.store.expire, self.config.expire_interval)]
        if self.config.dfile:
            jobs.append(("dfile save", self.save, self.config.save_interval))
        if self.allowed_dir is not None:
            jobs.append(("allowed-dir scan", self.rescan, self.config.allowed_rescan))
        for what, job, every in jobs:
            loop = LoopingCall(_guarded(what, job))
            loop.clock = self.clock
            loop.start(every, now=False)
            self._loops.append(loop)

    def stopService(self) -> None:  # noqa: N802
        super().stopService()
        for loop in self._loops:
            if loop.running:
                loop.stop()
        self._loops = []
        if self.config.dfile:
            try:
                self.save()
                log.info("saved dfile {path}: {torrents} torrents, {peers} peers",
                         path=self.config.dfile, torrents=len(self.store.torrents),
                         peers=self.store.peer_count)
            except OSError as e:
                log.error("cannot save dfile {path}: {error}", path=self.config.dfile,
                          error=e.strerror or str(e))


def buildService(config: TrackerConfig, reactor: Any) -> service.MultiService:
    """The tracker as a service tree: state first, then the HTTP listener.

    Children stop in reverse order, so the listener closes before the final
    dfile save.
    """
    store: Any = PeerStore(reactor, peer_timeout=config.peer_timeout,
                           max_torrents=config.max_torrents,
                           max_peers_per_torrent=config.max_peers_per_torrent,
                           max_peers=config.max_peers)
    if config.store is not None:
        # Shared peers live in Redis, which persists them itself: no dfile.
        from murder.tracker.redisstore import RedisPeerStore

        store = RedisPeerStore(reactor, config.store, peer_timeout=config.peer_timeout,
                               max_torrents=config.max_torrents,
                               max_peers_per_torrent=config.max_peers_per_torrent,
                               max_peers=config.max_peers)
        config = replace(config, dfile=None)
        log.info("peers kept in {store}", store=config.store)
    app = TrackerApp(
        store, interval=config.interval, min_interval=config.min_interval,
        numwant_default=config.numwant_default, numwant_max=config.numwant_max,
        trusted=TrustedNetworks(config.trusted_networks), verbose=config.verbose,
        auth=Authoriser.from_files(config.auth_secrets) if config.auth_secrets else None,
        leecher_interval=config.leecher_interval, stall_after=config.stall_after,
        view_cache=0.5)
    factory = TrackerHTTPFactory(app, reactor, verbose=config.verbose)
    top = service.MultiService()
    state = TrackerStateService(store, config, reactor, save_timer=app.metrics.dfile_save)
    state.setServiceParent(top)
    listener = StreamServerEndpointService(
        server_endpoint(reactor, config.listen, config.client_ca), factory)
    # A port already in use must fail the start, not just log.
    listener._raiseSynchronously = True
    listener.setName("tracker-http")
    listener.setServiceParent(top)
    top.store = store  # type: ignore[attr-defined]
    top.app = app  # type: ignore[attr-defined]
    if config.udp_port is not None:
        from twisted.application.internet import UDPServer

        from murder.tracker.udp import UDPTrackerCore, UDPTrackerProtocol

        top.udp = UDPTrackerCore(app)  # type: ignore[attr-defined]
        udp = UDPServer(config.udp_port, UDPTrackerProtocol(top.udp),  # type: ignore[attr-defined]
                        interface=config.udp_bind)
        udp.setName("tracker-udp")
        udp.setServiceParent(top)
    if config.topology:
        from murder.tracker.topology import RackAwareHandout, load

        store.handout = RackAwareHandout(load(config.topology))
        log.info("rack-aware peer lists from {path}", path=config.topology)
    return top


def _log_access(config: TrackerConfig) -> None:
    """Say at start which access controls are on (never the secrets)."""
    if config.auth_secrets:
        log.info("announce authorisation on: {count} secret file(s)",
                 count=len(config.auth_secrets))
    if config.client_ca:
        log.info("TLS client certificates required, CA {path}", path=config.client_ca)


#: Young-generation threshold of the cyclic GC in a tracker process (CPython's default: 700).
GC_YOUNG_THRESHOLD = 10_000


def tune_gc() -> None:
    """Make the cyclic garbage collector run rarely in a tracker process.

    A full store holds tens of thousands of Peer objects, and a full
    collection walks them all: 85 ms at 50,000 peers, measured in-process on
    the benchmark machine, which alone breaks the 20 ms p99 target.  Announces
    allocate few GC-tracked objects and create no reference cycles (reference
    counting frees them), so a young generation of 10,000 objects (a pause of
    a few ms at most) makes full collections about 15 times rarer and only
    delays the collection of rare cyclic garbage.  Process-wide, hence called
    by the process entry points only.
    """
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


def makeService(options: Options) -> service.MultiService:  # noqa: N802 (twistd API)
    """Entry point of the ``murder-tracker`` twistd plugin."""
    from twisted.internet import reactor

    tune_gc()
    _log_access(options.config)
    log.info("murder tracker listening on {listen}, dfile {dfile}",
             listen=options.config.listen, dfile=options.config.dfile)
    return buildService(options.config, reactor)


def runForeground(options: Options) -> int:  # noqa: N802 (cli API)
    """Run the tracker until SIGINT/SIGTERM; ``murder tracker`` returns this status."""
    from twisted.internet import reactor
    from twisted.logger import globalLogBeginner, textFileLogObserver

    config = options.config
    tune_gc()
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)],
                                     redirectStandardIO=False)
    top = buildService(config, reactor)
    try:
        top.privilegedStartService()
    except Exception as e:
        reason = getattr(e, "socketError", None) or e
        where = config.listen + (f" and udp:{config.udp_port}" if config.udp_port else "")
        print(f"murder tracker: cannot listen on {where}: {reason}", file=sys.stderr)
        return 1
    top.startService()
    _log_access(config)
    log.info("murder tracker listening on {listen}, dfile {dfile}",
             listen=config.listen, dfile=config.dfile)
    assert IReactorCore.providedBy(reactor)
    reactor.addSystemEventTrigger("before", "shutdown", top.stopService)
    reactor.run()
    return 0
