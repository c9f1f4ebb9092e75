"""Emulated datacenter for the swarm benchmark: hosts as network namespaces.

Every host is a namespace (``mzb<pid>x<k>-h<i>``) with one interface ``eth0``
cabled by a veth pair to a Linux bridge that lives in its own namespace
(``mzb<pid>x<k>-br``), so nothing is added to the root namespace and deleting
the namespaces removes every link.  Addresses come from 198.18.0.0/15 (the
benchmarking range): host 0 is the tracker (198.18.0.1), host 1 the seeder
(198.18.0.2), hosts 2.. the peers (198.18.0.10 upwards).

Shaping, per host, with HTB + a byte FIFO (this kernel has no netem, fq,
fq_codel, sfq or prio):

* upload: HTB on the host's own ``eth0`` egress;
* download: HTB on the bridge-side veth end's egress (frames leaving the bridge
  towards the host), so no ifb is needed.

TSO/GSO are left on: turning offloads off doubles the kernel's CPU cost.  ARP
and the bridge's forwarding table are filled statically, because learning them
under a burst of simultaneous SYNs costs retransmits at N=32.

`Topology` is a context manager; `teardown()` is idempotent and also runs from
``atexit``.  Callers that want Ctrl-C/SIGTERM to unwind use
`install_signal_handlers()`.

Run as a script, this module also holds the tiny TCP source/sink used by
`verify_shaping` (``python netns.py sink PORT`` / ``source ADDR PORT BYTES``).
"""

from __future__ import annotations

import atexit
import ipaddress
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Iterable, Sequence

NET = ipaddress.ip_network("198.18.0.0/15")
PREFIX_LEN = 15
TRACKER_ADDR = "198.18.0.1"
SEEDER_ADDR = "198.18.0.2"
_FIRST_PEER = 10

_NAME_RE = re.compile(r"^mzb(\d+)x\d+-")
_live: "set[Topology]" = set()
_counter = 0
_counter_lock = threading.Lock()


#: Run in every namespace: IPv6 off (no DAD/MLD chatter on the bridge) and
#: netfilter off for bridged frames (per-netns sysctl).
_NS_SYSCTL = ("for f in /proc/sys/net/ipv6/conf/all/disable_ipv6 "
              "/proc/sys/net/ipv6/conf/default/disable_ipv6; do echo 1 > $f; done; "
              "for f in /proc/sys/net/bridge/bridge-nf-call-iptables "
              "/proc/sys/net/bridge/bridge-nf-call-ip6tables "
              "/proc/sys/net/bridge/bridge-nf-call-arptables; do "
              "[ -e $f ] && echo 0 > $f; done; true")
#: ip -batch lines of a namespace's bridge br0 (no STP delay, no snooping).
_BRIDGE_LINES = ("link add br0 type bridge forward_delay 0 stp_state 0 mcast_snooping 0",
                 "link set br0 up", "link set lo up")


class NetnsError(RuntimeError):
    """An ``ip``/``tc`` command failed while building the emulated network."""


def host_address(index: int) -> str:
    """Address of host ``index``: 0 tracker, 1 seeder, 2.. peers (.10 upwards)."""
    if index == 0:
        return TRACKER_ADDR
    if index == 1:
        return SEEDER_ADDR
    return str(NET.network_address + _FIRST_PEER + (index - 2))


def host_mac(index: int) -> str:
    """A locally administered MAC derived from the index (static ARP needs it known)."""
    return "02:00:c6:12:%02x:%02x" % ((index >> 8) & 0xFF, index & 0xFF)


def _run(argv: Sequence[str], *, input: str | None = None, check: bool = True,
         timeout: float = 30.0) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(argv), input=input, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise NetnsError(f"{' '.join(argv)}: exit {proc.returncode}: {proc.stderr.strip()}")
    return proc


def netns_available() -> str | None:
    """None if we can build namespaces here, else the reason why not."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, tc)"
    for tool in ("ip", "tc", "bridge"):
        if not any(os.access(os.path.join(d, tool), os.X_OK)
                   for d in os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin").split(":")):
            return f"`{tool}` not found"
    try:
        _run(["ip", "netns", "list"], timeout=10)
    except (NetnsError, OSError, subprocess.TimeoutExpired) as e:
        return f"`ip netns` does not work: {e}"
    return None


def list_namespaces() -> list[str]:
    """Names of all named network namespaces (``ip netns list``)."""
    out = _run(["ip", "netns", "list"]).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def ns_pids(ns: str) -> list[int]:
    """PIDs of the processes living in namespace ``ns`` (empty if it is gone)."""
    proc = _run(["ip", "netns", "pids", ns], check=False)
    return [int(p) for p in proc.stdout.split() if p.isdigit()]


def _kill_ns_processes(names: Iterable[str]) -> None:
    """SIGKILL, by PID, every process still inside our namespaces; wait briefly."""
    pids = [pid for ns in names for pid in ns_pids(ns)]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 5.0
    while pids and time.monotonic() < deadline:
        pids = [p for p in pids if os.path.exists(f"/proc/{p}") and _state(p) != "Z"]
        if pids:
            time.sleep(0.02)


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "?"


def cleanup_stale() -> list[str]:
    """Delete ``mzb<pid>x..`` namespaces whose creating process is dead; return them."""
    removed = []
    for ns in list_namespaces():
        m = _NAME_RE.match(ns)
        if m and not os.path.exists(f"/proc/{m.group(1)}"):
            _kill_ns_processes([ns])
            _run(["ip", "netns", "del", ns], check=False)
            removed.append(ns)
    return removed


@dataclass(frozen=True)
class Host:
    """One emulated host: its namespace, address, MAC and bridge-side veth name."""

    index: int
    role: str
    ns: str
    addr: str
    mac: str
    bridge_port: str
    #: The rack the host sits in (`RackTopology`; 0 on a one-bridge `Topology`).
    rack: int = 0


@dataclass
class Topology:
    """``n_peers`` + 2 hosts on one bridge, each shaped to ``rate_mbit`` both ways.

    ``burst_bytes``/``queue_bytes`` default to values derived from the rate
    (see `_htb`).  Use as a context manager; `teardown()` always runs.
    """

    n_peers: int
    rate_mbit: float
    burst_bytes: int | None = None
    queue_ms: float = 100.0
    name: str = ""
    hosts: list[Host] = field(default_factory=list)
    _built: bool = False
    _torn_down: bool = False

    def __post_init__(self) -> None:
        global _counter
        if not self.name:
            with _counter_lock:
                _counter += 1
                self.name = f"mzb{os.getpid()}x{_counter}"
        self.bridge_ns = f"{self.name}-br"
        roles = ["tracker", "seeder"] + [f"peer{i}" for i in range(self.n_peers)]
        self.hosts = [Host(i, role, f"{self.name}-h{i}", host_address(i), host_mac(i), f"v{i}")
                      for i, role in enumerate(roles)]

    def __hash__(self) -> int:
        return hash(self.name)

    # ------------------------------------------------------------- accessors
    @property
    def tracker(self) -> Host:
        return self.hosts[0]

    @property
    def seeder(self) -> Host:
        return self.hosts[1]

    @property
    def peers(self) -> list[Host]:
        return self.hosts[2:]

    @property
    def namespaces(self) -> list[str]:
        return [h.ns for h in self.hosts] + [self.bridge_ns]

    @property
    def rate_bytes(self) -> float:
        """Configured per-host rate each way in bytes per second (1 Mbit = 10^6 bit)."""
        return self.rate_mbit * 1e6 / 8

    # ------------------------------------------------------------ lifecycle
    def __enter__(self) -> "Topology":
        try:
            self.build()
        except BaseException:
            self.teardown()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.teardown()

    def _htb(self, dev: str, rate_mbit: float) -> list[str]:
        """tc lines: HTB at ``rate_mbit`` on ``dev`` and a bfifo under it.

        Burst: 2 ms at the rate but never below one 64 KiB GSO super-packet
        plus a frame, so HTB does not stall on TSO-sized skbs.  Queue: ``queue_ms``
        at the rate (a switch port buffer), at least 256 KiB.
        """
        rate_bps = int(rate_mbit * 1e6)
        rate_bytes = rate_bps / 8
        burst = self.burst_bytes or max(66_000, int(rate_bytes * 0.002))
        limit = max(256 * 1024, int(rate_bytes * self.queue_ms / 1000))
        return [
            f"qdisc replace dev {dev} root handle 1: htb default 10",
            f"class add dev {dev} parent 1: classid 1:10 htb rate {rate_bps}bit "
            f"ceil {rate_bps}bit burst {burst}b cburst {burst}b quantum 60000",
            f"qdisc add dev {dev} parent 1:10 handle 10: bfifo limit {limit}",
        ]

    def build(self) -> None:
        """Create namespaces, bridge, veths, addresses, static neighbours, shaping."""
        if self._built:
            return
        _live.add(self)
        self._built = True
        _run(["ip", "-batch", "-"], input="".join(f"netns add {ns}\n" for ns in self.namespaces))
        sysctl = _NS_SYSCTL
        _run(["ip", "netns", "exec", self.bridge_ns, "sh", "-c", sysctl])
        br = list(_BRIDGE_LINES)
        for h in self.hosts:
            br.append(f"link add {h.bridge_port} type veth peer name eth0 netns {h.ns}")
            br.append(f"link set {h.bridge_port} master br0")
            br.append(f"link set {h.bridge_port} up")
        _run(["ip", "-n", self.bridge_ns, "-batch", "-"], input="\n".join(br) + "\n")
        _run(["bridge", "-n", self.bridge_ns, "-batch", "-"],
             input="".join(f"fdb replace {h.mac} dev {h.bridge_port} master static\n"
                           for h in self.hosts))
        tc_br = [line for h in self.hosts for line in self._htb(h.bridge_port, self.rate_mbit)]
        _run(["tc", "-n", self.bridge_ns, "-batch", "-"], input="\n".join(tc_br) + "\n")
        for h in self.hosts:
            _run(["ip", "netns", "exec", h.ns, "sh", "-c", sysctl])
            lines = [
                f"link set eth0 address {h.mac}",
                f"addr add {h.addr}/{PREFIX_LEN} dev eth0",
                "link set lo up",
                "link set eth0 up",
            ]
            lines += [f"neigh replace {o.addr} lladdr {o.mac} dev eth0 nud permanent"
                      for o in self.hosts if o is not h]
            _run(["ip", "-n", h.ns, "-batch", "-"], input="\n".join(lines) + "\n")
            _run(["tc", "-n", h.ns, "-batch", "-"], input="\n".join(self._htb("eth0", self.rate_mbit)) + "\n")

    def teardown(self) -> None:
        """Kill (by PID) whatever still runs in our namespaces, delete them. Idempotent."""
        if self._torn_down:
            return
        self._torn_down = True
        try:
            existing = set(list_namespaces())
        except (NetnsError, OSError):
            existing = set(self.namespaces)
        ours = [ns for ns in self.namespaces if ns in existing]
        if ours:
            _kill_ns_processes(ours)
            _run(["ip", "-force", "-batch", "-"], check=False,
                 input="".join(f"netns del {ns}\n" for ns in ours))
        _live.discard(self)

    # ------------------------------------------------------------ processes
    def argv(self, host: Host, argv: Sequence[str]) -> list[str]:
        """``argv`` wrapped to run inside ``host``'s namespace.

        ``ip netns exec`` execs the command, so the PID of the process started
        from this argv *is* the command's PID (wait4 rusage covers it).
        """
        return ["ip", "netns", "exec", host.ns, *argv]

    def run(self, host: Host, argv: Sequence[str], *, timeout: float = 30.0,
            check: bool = True) -> subprocess.CompletedProcess:
        """Run a short command inside ``host`` and wait for it."""
        return _run(self.argv(host, argv), timeout=timeout, check=check)

    def link_bytes(self, host: Host) -> dict[str, int]:
        """tx/rx byte counters of ``host``'s eth0 (frames incl. headers)."""
        out = _run(["ip", "-n", host.ns, "-s", "-j", "link", "show", "dev", "eth0"]).stdout
        stats = json.loads(out)[0]["stats64"]
        return {"tx_bytes": int(stats["tx"]["bytes"]), "rx_bytes": int(stats["rx"]["bytes"])}

    def qdisc_drops(self) -> int:
        """Packets dropped by all our shaping qdiscs (queue overflow)."""
        total = 0
        for ns in [self.bridge_ns] + [h.ns for h in self.hosts]:
            out = _run(["tc", "-n", ns, "-s", "-j", "qdisc", "show"], check=False).stdout
            try:
                for q in json.loads(out or "[]"):
                    if q.get("kind") in ("htb", "bfifo"):
                        total += int(q.get("drops", 0))
            except (ValueError, TypeError):
                pass
        return total


# ------------------------------------------------------------------ racks
def rack_cidr(rack: int) -> str:
    """Rack ``rack``'s /24: ``198.18.<rack>.0/24`` (the /15 holds 512 of them)."""
    if not 0 <= rack < 512:
        raise ValueError(f"rack {rack} outside 0..511 (one /24 each in {NET})")
    return str(ipaddress.ip_network((int(NET.network_address) + 256 * rack, 24)))


def rack_host_address(rack: int, k: int) -> str:
    """Address of the ``k``-th peer of rack ``rack``: ``198.18.<rack>.<10 + k>``.

    Rack 0 also holds the tracker (198.18.0.1) and the seeder (198.18.0.2),
    so the one-bridge `Topology`'s addresses and `TRACKER_ADDR` stay valid.
    """
    if not 0 <= k < 240:
        raise ValueError(f"host {k} outside 0..239 of a rack's /24")
    return str(ipaddress.ip_address(int(NET.network_address) + 256 * rack + _FIRST_PEER + k))


@dataclass(eq=False)
class RackTopology(Topology):
    """Racks of hosts: per-rack bridges joined by a spine over shaped uplinks.

    ``n_peers`` peers in ``racks`` racks of ``n_peers ÷ racks`` (rack-major:
    peers 0..k-1 in rack 0, …); the tracker and the seeder are extra hosts in
    rack 0 (as in ``murder simulate``, whose seeder is extra in rack 0).

    Layout, all in namespaces we create (nothing in the root namespace):

    * rack ``r``: namespace ``<name>-r<r>`` holding bridge ``br0``, one
      ``v<i>`` port per host (veth to the host's ``eth0``) and an uplink
      port ``upl`` (veth to ``u<r>`` in the spine);
    * spine: namespace ``<name>-sp`` holding bridge ``br0`` with the ports
      ``u0``, ``u1``, … — a non-blocking L2 switch, so the uplinks are the
      only inter-rack limit (what the simulator models);
    * one flat /15 link: hosts keep static ARP to every other host, and each
      bridge a static forwarding table (own hosts on their ports, everyone
      else behind ``upl``; in the spine, every host behind its rack's ``u<r>``).

    Shaping: host NICs as in `Topology` (upload on ``eth0``, download on the
    rack bridge's ``v<i>``); each rack's uplink carries
    ``hosts_per_rack × rate ÷ oversubscription`` each way: rack → spine on
    the rack side's ``upl`` egress, spine → rack on the spine side's ``u<r>``
    egress (HTB + byte FIFO of ``queue_ms`` at the uplink rate).
    """

    racks: int = 1
    oversubscription: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.racks < 1 or self.n_peers % self.racks:
            raise ValueError(f"{self.n_peers} peers do not fill {self.racks} racks evenly")
        if self.oversubscription <= 0:
            raise ValueError("oversubscription must be positive")
        hpr = self.n_peers // self.racks
        hosts = [Host(0, "tracker", f"{self.name}-h0", TRACKER_ADDR, host_mac(0), "v0", 0),
                 Host(1, "seeder", f"{self.name}-h1", SEEDER_ADDR, host_mac(1), "v1", 0)]
        for p in range(self.n_peers):
            i = len(hosts)
            rack, k = divmod(p, hpr)
            hosts.append(Host(i, f"peer{p}", f"{self.name}-h{i}", rack_host_address(rack, k),
                              host_mac(i), f"v{i}", rack))
        self.hosts = hosts
        self.spine_ns = f"{self.name}-sp"

    # ------------------------------------------------------------- accessors
    @property
    def hosts_per_rack(self) -> int:
        return self.n_peers // self.racks

    @property
    def uplink_mbit(self) -> float:
        """Each rack uplink's rate each way: hosts_per_rack × rate ÷ oversubscription."""
        return self.hosts_per_rack * self.rate_mbit / self.oversubscription

    @property
    def uplink_bytes_per_s(self) -> float:
        return self.uplink_mbit * 1e6 / 8

    def rack_ns(self, rack: int) -> str:
        return f"{self.name}-r{rack}"

    def rack_hosts(self, rack: int) -> list[Host]:
        return [h for h in self.hosts if h.rack == rack]

    @property
    def namespaces(self) -> list[str]:
        return ([h.ns for h in self.hosts] + [self.rack_ns(r) for r in range(self.racks)]
                + [self.spine_ns])

    def topology_text(self, row: str = "row0", dc: str = "dc1") -> str:
        """``murder tracker --topology`` lines: one ``CIDR dc1/row0/rack<r>`` per rack."""
        return "".join(f"{rack_cidr(r)} {dc}/{row}/rack{r}\n" for r in range(self.racks))

    def write_topology(self, path: str) -> str:
        """Write `topology_text` to ``path`` (atomically: a temp file renamed); return it."""
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "w") as f:
            f.write(self.topology_text())
        os.replace(tmp, path)
        return path

    # ------------------------------------------------------------ lifecycle
    def build(self) -> None:
        """Namespaces, rack bridges, spine, veths, static ARP/FDB, shaping."""
        if self._built:
            return
        _live.add(self)
        self._built = True
        _run(["ip", "-batch", "-"], input="".join(f"netns add {ns}\n" for ns in self.namespaces))
        sysctl = _NS_SYSCTL
        bridge = list(_BRIDGE_LINES)
        _run(["ip", "netns", "exec", self.spine_ns, "sh", "-c", sysctl])
        _run(["ip", "-n", self.spine_ns, "-batch", "-"], input="\n".join(bridge) + "\n")
        for r in range(self.racks):
            ns = self.rack_ns(r)
            _run(["ip", "netns", "exec", ns, "sh", "-c", sysctl])
            lines = list(bridge)
            for h in self.rack_hosts(r):
                lines += [f"link add {h.bridge_port} type veth peer name eth0 netns {h.ns}",
                          f"link set {h.bridge_port} master br0", f"link set {h.bridge_port} up"]
            lines += [f"link add upl type veth peer name u{r} netns {self.spine_ns}",
                      "link set upl master br0", "link set upl up"]
            _run(["ip", "-n", ns, "-batch", "-"], input="\n".join(lines) + "\n")
            _run(["bridge", "-n", ns, "-batch", "-"], input="".join(
                f"fdb replace {h.mac} dev {h.bridge_port if h.rack == r else 'upl'} master static\n"
                for h in self.hosts))
            tc = [line for h in self.rack_hosts(r) for line in self._htb(h.bridge_port, self.rate_mbit)]
            tc += self._htb("upl", self.uplink_mbit)
            _run(["tc", "-n", ns, "-batch", "-"], input="\n".join(tc) + "\n")
        spine = [line for r in range(self.racks)
                 for line in (f"link set u{r} master br0", f"link set u{r} up")]
        _run(["ip", "-n", self.spine_ns, "-batch", "-"], input="\n".join(spine) + "\n")
        _run(["bridge", "-n", self.spine_ns, "-batch", "-"], input="".join(
            f"fdb replace {h.mac} dev u{h.rack} master static\n" for h in self.hosts))
        _run(["tc", "-n", self.spine_ns, "-batch", "-"], input="\n".join(
            line for r in range(self.racks) for line in self._htb(f"u{r}", self.uplink_mbit)) + "\n")
        for h in self.hosts:
            _run(["ip", "netns", "exec", h.ns, "sh", "-c", sysctl])
            lines = [f"link set eth0 address {h.mac}", f"addr add {h.addr}/{PREFIX_LEN} dev eth0",
                     "link set lo up", "link set eth0 up"]
            lines += [f"neigh replace {o.addr} lladdr {o.mac} dev eth0 nud permanent"
                      for o in self.hosts if o is not h]
            _run(["ip", "-n", h.ns, "-batch", "-"], input="\n".join(lines) + "\n")
            _run(["tc", "-n", h.ns, "-batch", "-"], input="\n".join(self._htb("eth0", self.rate_mbit)) + "\n")

    # ------------------------------------------------------------- counters
    def uplink_bytes(self) -> list[dict[str, int]]:
        """Per rack: bytes (frames incl. headers) that left it and entered it over its uplink.

        ``out``: tx of the rack side's ``upl`` (rack → spine); ``in``: tx of the
        spine side's ``u<r>`` (spine → rack).  Counted after the shaper, so a
        frame the uplink queue dropped is not counted.
        """
        out = []
        for r in range(self.racks):
            out.append({"out": _tx_bytes(self.rack_ns(r), "upl"),
                        "in": _tx_bytes(self.spine_ns, f"u{r}")})
        return out

    def qdisc_drops(self) -> int:
        """Packets dropped by all our shaping qdiscs (hosts, racks, spine)."""
        total = 0
        for ns in self.namespaces:
            out = _run(["tc", "-n", ns, "-s", "-j", "qdisc", "show"], check=False).stdout
            try:
                for q in json.loads(out or "[]"):
                    if q.get("kind") in ("htb", "bfifo"):
                        total += int(q.get("drops", 0))
            except (ValueError, TypeError):
                pass
        return total


def _tx_bytes(ns: str, dev: str) -> int:
    out = _run(["ip", "-n", ns, "-s", "-j", "link", "show", "dev", dev]).stdout
    return int(json.loads(out)[0]["stats64"]["tx"]["bytes"])


def verify_racks(rate_mbit: float, oversubscription: float = 4.0, hosts_per_rack: int = 2,
                 seconds: float = 1.0) -> dict[str, float]:
    """Measure, on a fresh 2-rack topology, that hosts and uplinks give their rates.

    ``in_rack``: one stream between two hosts of rack 1 (≈ the host rate);
    ``cross_rack``: one stream rack 0 → rack 1 (≈ the uplink rate when it is
    below the host rate); ``uplink_bytes``: bytes rack 1 received over its
    uplink during the two measurements (only the cross-rack stream's).
    """
    with RackTopology(n_peers=2 * hosts_per_rack, rate_mbit=rate_mbit, racks=2,
                      oversubscription=oversubscription) as topo:
        r0, r1 = topo.rack_hosts(0), topo.rack_hosts(1)
        before = topo.uplink_bytes()[1]["in"]
        in_rack = measure(topo, [r1[0]], [r1[1]], seconds)
        mid = topo.uplink_bytes()[1]["in"]
        cross = measure(topo, [r0[-1]], [r1[0]], seconds)
        after = topo.uplink_bytes()[1]["in"]
        return {"configured_mbit": rate_mbit, "uplink_mbit": topo.uplink_mbit,
                "in_rack": in_rack, "cross_rack": cross,
                "uplink_bytes_in_rack_stream": mid - before,
                "uplink_bytes_cross_stream": after - mid,
                "stream_bytes": int(topo.rate_bytes * seconds)}


def teardown_all() -> None:
    """Tear down every topology this process still has (atexit / signal path)."""
    for topo in list(_live):
        topo.teardown()


atexit.register(teardown_all)


class Interrupted(BaseException):
    """Raised in the main thread on SIGTERM/SIGHUP/SIGALRM so ``with`` blocks unwind."""


def install_signal_handlers(global_timeout: float | None = None) -> None:
    """Turn SIGTERM/SIGHUP (and SIGALRM after ``global_timeout`` s) into `Interrupted`.

    SIGINT already raises KeyboardInterrupt.  Both unwind the ``with Topology``
    blocks, whose ``__exit__`` tears the namespaces down.
    """
    def handler(signum: int, frame: object) -> None:
        raise Interrupted(signal.Signals(signum).name)

    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGALRM):
        signal.signal(sig, handler)
    if global_timeout:
        signal.alarm(max(1, int(global_timeout)))


# ------------------------------------------------------------------ shaping check
_SELF = os.path.abspath(__file__)


def _sink(port: int, conns: int) -> None:
    """Accept ``conns`` connections, read each to EOF, print one JSON line per stream."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", port))
    srv.listen(16)
    print("ready", flush=True)
    results = []

    def drain(c: socket.socket) -> None:
        n, first = 0, None
        while True:
            b = c.recv(1 << 20)
            if not b:
                break
            if first is None:
                first = time.monotonic()
            n += len(b)
        end = time.monotonic()
        results.append({"bytes": n, "first": first, "end": end})

    threads = []
    for _ in range(conns):
        c, _ = srv.accept()
        t = threading.Thread(target=drain, args=(c,))
        t.start()
        threads.append(t)
    for t in threads:
        t.join()
    print(json.dumps({"bytes": sum(r["bytes"] for r in results),
                      "first": min(r["first"] for r in results),
                      "end": max(r["end"] for r in results)}), flush=True)


def _source(addr: str, port: int, nbytes: int) -> None:
    """Connect and send ``nbytes`` then close."""
    s = socket.create_connection((addr, port), timeout=30)
    chunk = b"\0" * (1 << 16)
    left = nbytes
    while left > 0:
        left -= s.send(chunk[:min(left, len(chunk))])
    s.close()


def measure(topo: Topology, senders: Sequence[Host], receivers: Sequence[Host],
            seconds: float = 2.0, port: int = 5201) -> float:
    """Aggregate Mbit/s of ``senders[i] -> receivers[i]`` streams run together.

    All bytes received divided by the span from the first byte at any sink to
    the last byte at any sink (CLOCK_MONOTONIC is shared by all namespaces).
    """
    nbytes = int(topo.rate_bytes * seconds / len(senders))
    sinks: dict[str, subprocess.Popen] = {}
    per_sink: dict[str, int] = {}
    for r in receivers:
        per_sink[r.ns] = per_sink.get(r.ns, 0) + 1
    hosts = {r.ns: r for r in receivers}
    try:
        for ns, conns in per_sink.items():
            sinks[ns] = subprocess.Popen(
                topo.argv(hosts[ns], [sys.executable, _SELF, "sink", str(port), str(conns)]),
                stdout=subprocess.PIPE, text=True)
            if sinks[ns].stdout.readline().strip() != "ready":
                raise NetnsError("shaping check: sink did not start")
        sources = [subprocess.Popen(topo.argv(s, [sys.executable, _SELF, "source", r.addr,
                                                  str(port), str(nbytes)]))
                   for s, r in zip(senders, receivers)]
        for p in sources:
            if p.wait(timeout=60) != 0:
                raise NetnsError("shaping check: source failed")
        reports = []
        for p in sinks.values():
            out, _ = p.communicate(timeout=60)
            reports.append(json.loads(out.strip().splitlines()[-1]))
        span = max(r["end"] for r in reports) - min(r["first"] for r in reports)
        return sum(r["bytes"] for r in reports) * 8 / span / 1e6
    finally:
        for p in sinks.values():
            if p.poll() is None:
                p.kill()
                p.wait()


def verify_shaping(rate_mbit: float, seconds: float = 2.0) -> dict[str, float]:
    """Measure, on a fresh 3-host topology, that the shapers give the configured rate.

    ``single``: one TCP stream A->B (A's upload + B's download shaper);
    ``download``: A->B and C->B together (B's download shaper caps the sum);
    ``upload``: A->B and A->C together (A's upload shaper caps the sum).
    Each should be close to ``rate_mbit``.
    """
    with Topology(n_peers=1, rate_mbit=rate_mbit) as topo:
        a, b, c = topo.seeder, topo.peers[0], topo.tracker
        return {
            "configured_mbit": rate_mbit,
            "single": measure(topo, [a], [b], seconds),
            "download": measure(topo, [a, c], [b, b], seconds),
            "upload": measure(topo, [a, a], [b, c], seconds),
        }


if __name__ == "__main__":
    if sys.argv[1] == "sink":
        _sink(int(sys.argv[2]), int(sys.argv[3]))
    elif sys.argv[1] == "source":
        _source(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    elif sys.argv[1] == "verify":
        install_signal_handlers(120)
        print(json.dumps(verify_shaping(float(sys.argv[2]))))
    elif sys.argv[1] == "verify-racks":
        install_signal_handlers(120)
        print(json.dumps(verify_racks(float(sys.argv[2]), float(sys.argv[3]) if len(sys.argv) > 3 else 4.0)))
    elif sys.argv[1] == "cleanup":
        print("removed:", cleanup_stale())
    else:
        sys.exit(f"usage: {sys.argv[0]} verify RATE_MBIT | verify-racks RATE_MBIT [OVERSUB] | cleanup")
