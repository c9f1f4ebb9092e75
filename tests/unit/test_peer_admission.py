"""Who gets a host's connection places (murder/peer/admission.py), in memory.

When a whole fleet dials at once, every host is dialed by many others while
its own dials (the tracker's order: seeders, its rack, the far share) are
under way.  A simulated 1,000-host deploy split into groups that never
reached the seeder: incoming handshakes filled each host first and its own
dials were refused, and nothing was dialed again until the next announce
(bench/README.md, session 7).
"""

from __future__ import annotations

import random

from twisted.internet.task import Clock

from murder.peer.session import Swarm, SwarmConfig
from murder.peer.wire import Bitfield
from murder.testing import MemoryNetwork, MemoryStorage, build_torrent
from murder.testing import pattern as payload

PLEN = 2**15


class _Hosts:
    """Swarms of one torrent listening on a MemoryNetwork, by name."""

    def __init__(self, **limits: int | tuple[int, int]) -> None:
        self.meta, _ = build_torrent(payload(4 * PLEN), piece_length=PLEN)
        self.net = MemoryNetwork()
        self.clock = Clock()
        self.swarms: dict[str, Swarm] = {}
        self.address: dict[str, tuple[str, int]] = {}
        for k, (name, limit) in enumerate(limits.items()):
            places, initiate = limit if isinstance(limit, tuple) else (limit, 0)
            swarm = Swarm(self.meta, MemoryStorage(self.meta), Bitfield(self.meta.num_pieces),
                          self.clock, SwarmConfig(max_connections=places, max_initiate=initiate),
                          rng=random.Random(k), dialer=self.net)
            self.address[name] = (f"10.0.0.{k + 10}", 6881)
            self.net.listen(swarm, self.address[name])
            self.swarms[name] = swarm

    def tracker_list(self, name: str, *names: str) -> None:
        """``name`` gets a tracker reply listing ``names`` in that order."""
        self.swarms[name].add_peers([(self.address[n], None) for n in names])

    def peers_of(self, name: str) -> set[str]:
        by_address = {a: n for n, a in self.address.items()}
        swarm = self.swarms[name]
        out = set()
        for peer in swarm.connections.values():
            other = next(n for n, s in self.swarms.items() if s.peer_id == peer.peer_id)
            out.add(by_address[self.address[other]])
        return out


class AdmissionTests:
    def test_incoming_connection_does_not_take_a_place_our_dials_hold(self):
        """H (4 places, 2 its own to open) dials A and B; C, D and E dial H
        first.  C and D get the places nobody holds, E is refused, and H's
        own dials complete: H keeps the tracker's choice."""
        hosts = _Hosts(H=4, A=10, B=10, C=10, D=10, E=10)
        for name in ("C", "D", "E"):
            hosts.tracker_list(name, "H")
        hosts.tracker_list("H", "A", "B")
        hosts.net.flush()
        assert hosts.peers_of("H") == {"A", "B", "C", "D"}
        assert hosts.peers_of("E") == set()

    def test_a_refused_dial_is_replaced_by_the_next_listed_peer(self):
        """H (2 places, both its own to open) is given A, B, C; A is full
        and refuses.  H dials C at once, not at its next announce."""
        hosts = _Hosts(H=(2, 2), A=1, B=10, C=10, D=10)
        hosts.tracker_list("A", "D")
        hosts.net.flush()
        assert hosts.peers_of("A") == {"D"}  # A is full
        hosts.tracker_list("H", "A", "B", "C")
        hosts.net.flush()
        assert hosts.peers_of("H") == {"B", "C"}

    def test_a_listed_peer_is_dialed_once_per_tracker_reply(self):
        """A refused peer is not dialed again until the tracker lists it
        again (no dial loop between full hosts)."""
        hosts = _Hosts(H=3, A=1, D=10)
        hosts.tracker_list("A", "D")
        hosts.net.flush()
        dials: list[tuple[str, int]] = []
        dial = hosts.net.dial

        def counting(core, address):
            dials.append(address)
            dial(core, address)
        hosts.net.dial = counting
        hosts.tracker_list("H", "A")
        hosts.net.flush()
        assert dials == [hosts.address["A"]] and hosts.peers_of("H") == set()
        hosts.tracker_list("H", "A")
        hosts.net.flush()
        assert dials == [hosts.address["A"]] * 2

    def test_we_open_at_most_half_our_places(self):
        """H (4 places) given five peers dials two (``max_initiate`` 0: half
        of ``max_connections``) and still takes two that dial it; a fifth
        is refused.  (Dialing the whole list let the first hosts of a fleet
        fill each other's places, and later hosts reached none of them.)"""
        hosts = _Hosts(H=4, A=10, B=10, C=10, D=10, E=10)
        hosts.tracker_list("H", "A", "B", "C", "D", "E")
        hosts.net.flush()
        assert hosts.peers_of("H") == {"A", "B"}
        for name in ("C", "D", "E"):
            hosts.tracker_list(name, "H")
            hosts.net.flush()
        assert hosts.peers_of("H") == {"A", "B", "C", "D"}
