"""Who may connect: dialing the tracker's peers, refusing handshakes, bans.

Part of the swarm core; it shares the swarm's ``{peer id: Peer}`` map and
asks it to forget a connection superseded by a duplicate.  Dialing goes
through the injected :class:`~murder.peer.interfaces.Dialer` (TCP in
production, in memory in tests and the simulator).
"""

from __future__ import annotations

from typing import Callable

from twisted.logger import Logger

from murder.peer.config import SwarmConfig
from murder.peer.interfaces import Address, Dialer, Peer, PeerLink, SwarmEvents


class Admission:
    """Dials, refusals and bans of one swarm."""

    log = Logger()

    def __init__(self, own_id: bytes, config: SwarmConfig, connections: dict[bytes, Peer],
                 dialer: Dialer | None, forget: Callable[[Peer], None]) -> None:
        self.own_id = own_id
        self.config = config
        self.connections = connections
        #: None: this swarm never dials (it only accepts).
        self.dialer = dialer
        self._forget = forget
        self.dialing: set[Address] = set()
        self.banned_ids: set[bytes] = set()
        self.banned_hosts: set[Address] = set()
        #: Addresses that turned out to be this very swarm.
        self.self_addresses: set[Address] = set()
        # The tracker's last list and which of it we dialed since: a dial
        # that fails or is refused (the other host is full) is replaced by
        # the next one, not only at the next announce.
        self._listed: list[tuple[Address, bytes | None]] = []
        self._tried: set[Address] = set()
        self._core: SwarmEvents | None = None
        self._is_seed = False

    def add_peers(self, core: SwarmEvents, peers: list[tuple[Address, bytes | None]],
                  is_seed: bool) -> None:
        """Dial peers the tracker returned, skipping ourselves and known ones."""
        self._listed, self._tried = list(peers), set()
        self._core, self._is_seed = core, is_seed
        self._dial_more()

    def _dial_more(self) -> None:
        """Dial the tracker's list in its order (seeders, our rack, the far
        share, …) up to our connection limit, skipping what was dialed since
        that list came."""
        core, is_seed = self._core, self._is_seed
        if self.dialer is None or core is None:
            return
        opened = sum(1 for c in self.connections.values() if c.outgoing)
        initiate = self.config.max_initiate or max(1, self.config.max_connections // 2)
        for address, peer_id in self._listed:
            if address in self._tried:
                continue
            if not core.accepting() or len(self.connections) + len(self.dialing) >= \
                    self.config.max_connections or \
                    opened + len(self.dialing) >= initiate:
                return
            if peer_id is not None and (peer_id == self.own_id or peer_id in self.connections
                                        or peer_id in self.banned_ids):
                continue
            if address in self.dialing or address in self.banned_hosts \
                    or address in self.self_addresses:
                continue
            if any(c.address == address for c in self.connections.values()):
                continue
            if is_seed and peer_id is None:
                # A seed waits to be dialed by those who need it; dialing only
                # makes duplicate connections.
                continue
            self.dialing.add(address)
            self._tried.add(address)
            self.dialer.dial(core, address)

    def dial_failed(self, address: Address, why: str) -> None:
        self.dialing.discard(address)
        self.log.debug("cannot connect to {address}: {why}", address=address, why=why)
        self._dial_more()

    def connection_failed(self, link: PeerLink) -> None:
        if link.outgoing:
            self.dialing.discard(link.address)
            self._dial_more()

    def connected(self, link: PeerLink) -> None:
        if link.outgoing:
            self.dialing.discard(link.address)

    def accept(self, link: PeerLink, stopping: bool) -> str | None:
        """A reason to refuse this handshake, or None to accept it."""
        pid = link.peer_id
        assert pid is not None
        if stopping:
            return "shutting down"
        if pid == self.own_id:
            if link.outgoing:
                self.self_addresses.add(link.address)
            return "connection to ourselves"
        if pid in self.banned_ids or link.address in self.banned_hosts:
            return "banned peer"
        existing = self.connections.get(pid)
        if existing is not None:
            # Both sides dialed: keep the connection dialed by the smaller id,
            # a rule both ends apply identically.
            if link.outgoing != (self.own_id < pid):
                return "duplicate peer id"
            existing.link.drop("duplicate peer id (superseded)")
            self._forget(existing)
        # Our own dials hold their places: an incoming connection may not
        # take a place a dial of ours will need.  Else, when a whole fleet
        # dials at once, incoming handshakes filled every host before its
        # own dials (seeders first, then its rack, then the far share: the
        # tracker's order) completed, those were refused, and a simulated
        # 1,000-host deploy split into groups that never reached the seeder
        # (bench/README.md, session 7).
        held = 0 if link.outgoing else len(self.dialing)
        if len(self.connections) + held >= self.config.max_connections:
            return "too many connections"
        return None

    def ban(self, link: PeerLink, why: str) -> None:
        self.log.warn("banning {address}: {why}", address=link.address, why=why)
        if link.peer_id:
            self.banned_ids.add(link.peer_id)
        if link.address:
            self.banned_hosts.add(link.address)
        link.drop(why)


__all__ = ["Admission"]
