#!/usr/bin/env python3
"""Why bytes cross racks: every cross-rack byte of a simulated deploy, by cause.

Takes ``murder simulate``'s own options (same defaults, same ``--policy``
list) and runs each configuration with a probe that watches the cores:

- when a host asks a connection in *another rack* for a block, the request
  is tagged with why it went far: ``owner`` (a new piece this host owns on
  its rack's ring), ``owner cont.`` (a further block of a piece first asked
  far as owner), ``backup`` (a piece this host backs up on the ring, asked
  after its owner's time, ``Nearness.BACKUP_UNITS``), ``started near`` (a
  piece this host does not own, in progress from a near connection before
  this far request: the near holder refused or went; session 8 found the
  seeder's super-seeding refusals here), ``fallback`` (any other piece this
  host does not own, asked while no near connection had work for us:
  ``Requests._near_done``, the second picker pass),
  ``endgame`` (a duplicate request of the endgame), ``near lost`` (a piece
  started from a near connection, continued far: the near source went),
  ``no near key`` (the host does not tell near from far: random handout or
  ``:nonear``);
- and with the state of that piece in the requester's rack at the moment
  the host first asked far for it: ``first`` (no rack mate held it or was
  fetching it from far), ``mate fetching`` (another rack mate had asked far
  for it and not finished), ``mate held, conn.`` (a rack mate held it and we
  were connected to one such mate), ``mate held, not conn.`` (held in the
  rack, but by none of our connections).

Every PIECE message put on a cross-rack pipe is then charged to its
request's tag; everything else on those pipes (requests, HAVEs, handshakes)
is ``messages``.  Figures are F per rack: bytes ÷ (payload × racks), the
simulator's ``xrack÷F·R`` column, split.

    nice -n 10 .venv/bin/python bench/sim_crossrack.py --hosts 320 \\
        --hosts-per-rack 40 --oversubscription 4 --numwant 10 \\
        --max-connections 20 --rate-quantum 0.02 --startup 0 \\
        --real-piece-length 16K --piece-length 8M --policy rack \\
        --json bench/results/s6-crossrack-320.json

Virtual time: the figures do not depend on machine load (no bench lock).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from murder.peer.picker import Picker  # noqa: E402
from murder.peer import wire  # noqa: E402
from murder.peer.wire import BLOCK_SIZE  # noqa: E402
from murder.sim import cli  # noqa: E402
from murder.sim.fleet import build_and_run  # noqa: E402

PATHS = ["owner", "owner cont.", "backup", "started near", "fallback", "endgame", "near lost",
         "no near key"]
STATES = ["first", "mate fetching", "mate held, conn.", "mate held, not conn."]


def rack_of(ip: str) -> int:
    """The rack of a simulated host's address (``fleet.host_ip``; seeders: rack 0)."""
    a, b = ip.split(".")[1:3]
    return int(a) * 256 + int(b)


def _owned(host: Any, index: int) -> bool:
    """Does ``host`` own ``index`` on its ring?  The cached ring only: the
    far request just made built it, and rebuilding here would shift the
    core's own rebuild times (the probe must not change the run)."""
    owned = host.swarm.near._owned
    return bool(owned is not None and owned[index])


class CrossRackProbe:
    """Tags far requests with their cause and charges cross-rack PIECE bytes to them.

    A probe for :func:`murder.sim.fleet.build_and_run`; :meth:`install`
    wraps :class:`Picker`'s ``next_requests`` and ``mark_have`` for the run
    (undone by :meth:`uninstall`)."""

    #: Virtual seconds per slot of the fetch timeline.
    SLOT = 0.25

    def __init__(self) -> None:
        self.bytes: dict[tuple[str, str], float] = {}
        self.seeder_bytes: dict[str, float] = {}
        self.fetches: dict[tuple[str, str], int] = {}
        self.messages = 0.0
        #: PIECE bytes into each rack (by the receiver's rack).
        self.into: dict[int, float] = {}
        #: Per SLOT seconds of virtual time: [first far fetches, duplicates].
        self.when: dict[int, list[int]] = {}
        self.untagged = 0.0
        self.hosts: list[Any] = []
        self._host_of: dict[int, Any] = {}
        self._unmapped: list[Any] = []
        self._by_net: dict[int, Any] = {}
        self._seeder_ips: set[str] = set()
        # (receiver index, sender ip, piece, begin) → (path, state)
        self._tag: dict[tuple[int, str, int, int], tuple[str, str]] = {}
        # (receiver index, piece) → (path, state) of its first far request
        self._piece: dict[tuple[int, int], tuple[str, str]] = {}
        self._rack_held: dict[int, set[int]] = {}
        self._rack_far: dict[int, dict[int, set[int]]] = {}
        self._saved: list[tuple[str, Any]] = []

    # -- installation
    def __call__(self, clock: Any, net: Any, hosts: list[Any]) -> None:
        self.hosts = hosts
        self._unmapped = [h for h in hosts if not h.seeder]
        self._by_net = {h.net_id: h for h in hosts}
        self._seeder_ips = {h.ip for h in hosts if h.seeder}
        send = net.send
        probe = self

        def counted_send(pipe: Any, size: float, payload: Any, deliver: Any) -> None:
            if pipe.cross and not pipe.closed:
                probe._charge(pipe, size, payload)
            send(pipe, size, payload, deliver)

        net.send = counted_send

    def install(self) -> None:
        probe = self
        next_requests = Picker.next_requests
        mark_have = Picker.mark_have

        def tagged(picker: Picker, peer: Any, peer_bits: Any, count: int, *args: Any,
                   **kw: Any) -> list:
            before = set(picker.in_progress)
            blocks = next_requests(picker, peer, peer_bits, count, *args, **kw)
            if blocks:
                probe._requested(picker, peer, blocks, before, kw)
            return blocks

        def had(picker: Picker, index: int) -> None:
            mark_have(picker, index)
            probe._have(picker, index)

        self._saved = [("next_requests", next_requests), ("mark_have", mark_have)]
        Picker.next_requests = tagged  # type: ignore[method-assign]
        Picker.mark_have = had  # type: ignore[method-assign]

    def uninstall(self) -> None:
        for name, fn in self._saved:
            setattr(Picker, name, fn)
        self._saved = []

    # -- bookkeeping
    def _host(self, picker: Picker) -> Any:
        host = self._host_of.get(id(picker))
        if host is None:
            left = []
            for h in self._unmapped:
                if h.swarm is None:
                    left.append(h)
                else:
                    self._host_of[id(h.swarm.picker)] = h
            self._unmapped = left
            host = self._host_of.get(id(picker))
        return host

    def _state(self, host: Any, index: int) -> str:
        rack = host.rack
        if index in self._rack_held.get(rack, ()):
            for c in host.swarm.connections.values():
                if c.bits is not None and index in c.bits and \
                        rack_of(c.address[0]) == rack:
                    return "mate held, conn."
            return "mate held, not conn."
        fetching = self._rack_far.get(rack, {}).get(index)
        if fetching and (len(fetching) > 1 or host.index not in fetching):
            return "mate fetching"
        return "first"

    def _requested(self, picker: Picker, peer: Any, blocks: list, before: set[int],
                   kw: dict[str, Any]) -> None:
        host = self._host(picker)
        if host is None or host.seeder:
            return
        ip = peer.address[0]
        if rack_of(ip) == host.rack:
            return
        far = kw.get("far", False)
        for block in blocks:
            index, begin = block[0], block[1]
            key = (host.index, index)
            piece = picker.in_progress.get(index)
            holders = piece.requested.get(begin // BLOCK_SIZE) if piece is not None else None
            if not far:
                path = "no near key"
            elif holders is not None and len(holders) > 1:
                path = "endgame"
            elif not _owned(host, index):
                path = "started near" if index in before and key not in self._piece else \
                    "backup" if host.swarm.near._backup[index] else "fallback"
            elif index not in before and key not in self._piece:
                path = "owner"
            elif key in self._piece:
                path = self._piece[key][0]
                path = "owner cont." if path == "owner" else path
            else:
                path = "near lost"
            first = self._piece.get(key)
            if first is None:
                state = self._state(host, index)
                self._piece[key] = (path, state)
                self._rack_far.setdefault(host.rack, {}).setdefault(index, set()).add(
                    host.index)
                self.fetches[(path, state)] = self.fetches.get((path, state), 0) + 1
                slot = int(host.swarm.clock.seconds() / self.SLOT)
                row = self.when.setdefault(slot, [0, 0])
                row[state != "first"] += 1
            else:
                state = first[1]
            self._tag[(host.index, ip, index, begin)] = (path, state)

    def _have(self, picker: Picker, index: int) -> None:
        host = self._host(picker)
        if host is None or host.seeder:
            return
        self._rack_held.setdefault(host.rack, set()).add(index)
        fetching = self._rack_far.get(host.rack, {}).get(index)
        if fetching:
            fetching.discard(host.index)

    def _charge(self, pipe: Any, size: float, payload: Any) -> None:
        # Bytes link: one PIECE message's bytes; message link (the
        # default): a (kind, index, begin, data) tuple.
        if isinstance(payload, tuple) and payload and payload[0] == wire.PIECE:
            index, begin = payload[1], payload[2]
        elif (isinstance(payload, (bytes, bytearray)) and len(payload) >= 13
              and payload[4] == wire.PIECE):
            index = int.from_bytes(payload[5:9], "big")
            begin = int.from_bytes(payload[9:13], "big")
        else:
            self.messages += size
            return
        receiver = self._by_net.get(pipe.dst)
        sender = self._by_net.get(pipe.src)
        tag = None
        if receiver is not None and sender is not None:
            tag = self._tag.get((receiver.index, sender.ip, index, begin))
        if tag is None:
            self.untagged += size
            return
        self.bytes[tag] = self.bytes.get(tag, 0.0) + size
        self.into[receiver.rack] = self.into.get(receiver.rack, 0.0) + size
        if sender.seeder:
            self.seeder_bytes[tag[0]] = self.seeder_bytes.get(tag[0], 0.0) + size

    # -- output
    def table(self, unit: float) -> list[str]:
        """Rows of F per rack by cause (``unit`` = payload × racks)."""
        lines = [f"{'cause (F per rack)':18} " + " ".join(f"{s:>13}" for s in STATES)
                 + f" {'total':>7} {'seeder':>7} {'fetches':>8}"]
        for path in PATHS:
            row = [self.bytes.get((path, s), 0.0) / unit for s in STATES]
            fetches = sum(self.fetches.get((path, s), 0) for s in STATES)
            if not any(row) and not fetches:
                continue
            lines.append(f"{path:18} " + " ".join(f"{v:13.2f}" for v in row)
                         + f" {sum(row):7.2f} {self.seeder_bytes.get(path, 0.0) / unit:7.2f}"
                         f" {fetches:8d}")
        cols = [sum(self.bytes.get((p, s), 0.0) for p in PATHS) / unit for s in STATES]
        pieces = sum(cols)
        lines.append(f"{'all PIECE':18} " + " ".join(f"{v:13.2f}" for v in cols)
                     + f" {pieces:7.2f} {sum(self.seeder_bytes.values()) / unit:7.2f}"
                     f" {sum(self.fetches.values()):8d}")
        lines.append("far fetches started per 0.25 s (first in rack / duplicate): " + ", ".join(
            f"{k * self.SLOT:g}: {v[0]}/{v[1]}" for k, v in sorted(self.when.items())))
        lines.append("PIECE bytes into each rack (F): " + ", ".join(
            f"{r}: {f:.2f}" for r, f in self._into_rack(unit).items()))
        total = (pieces * unit + self.untagged + self.messages) / unit
        lines.append(f"untagged PIECE {self.untagged / unit:.2f}, messages "
                     f"{self.messages / unit:.2f}, all {total:.2f} F per rack")
        return lines

    def to_json(self, unit: float) -> dict[str, Any]:
        return {"f_per_rack": {f"{p} / {s}": v / unit for (p, s), v in self.bytes.items()},
                "seeder_f_per_rack": {p: v / unit for p, v in self.seeder_bytes.items()},
                "fetches": {f"{p} / {s}": n for (p, s), n in self.fetches.items()},
                "untagged_f_per_rack": self.untagged / unit,
                "fetches_per_slot": {f"{k * self.SLOT:g}": v for k, v in sorted(self.when.items())},
                "messages_f_per_rack": self.messages / unit,
                "into_rack_f": {str(r): f for r, f in self._into_rack(unit).items()}}

    def _into_rack(self, unit: float) -> dict[int, float]:
        """PIECE bytes into each rack in payloads (``unit`` = payload × racks)."""
        racks = len({h.rack for h in self.hosts}) or 1
        return {r: v * racks / unit for r, v in sorted(self.into.items())}


def main(argv: list[str]) -> int:
    options = cli.Options()
    try:
        options.parseOptions(argv)
    except cli.usage.UsageError as e:
        print(f"sim_crossrack.py: {e}", file=sys.stderr)
        return 2
    docs = []
    ok = True
    for cfg in options.configs:
        probe = CrossRackProbe()
        probe.install()
        try:
            result = build_and_run(cfg, probe=probe)
        finally:
            probe.uninstall()
        print(cli.HEADER)
        print(cli.summary_line(result), flush=True)
        unit = cfg.num_pieces * cfg.piece_length * cfg.racks
        for line in probe.table(unit):
            print(line)
        print(flush=True)
        ok = ok and result.time_to_last is not None
        docs.append({"result": result.to_json(), "causes": probe.to_json(unit)})
    if options["json"]:
        path = options["json"]
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path + ".tmp", "w") as f:
            json.dump({"runs": docs}, f, indent=1)
        os.replace(path + ".tmp", path)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
