"""bench/netns.py's racks: per-rack bridges joined by a spine over shaped uplinks.

The layout checks run anywhere (pure: addresses, the topology file the tracker
reads).  The network checks need root and ``ip``/``tc``/``bridge`` and are
skipped without them: the topology is built and torn down, an in-rack stream
never touches the uplink, a cross-rack stream crosses it and is held to the
uplink's rate (below the hosts' own rate, so an unshaped uplink fails the
test; an upper bound only, so a loaded machine cannot make it flaky).
"""

from __future__ import annotations

import ipaddress
import sys
from pathlib import Path

import pytest

from murder.tracker import topology as tracker_topology

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))

import netns  # noqa: E402


class RackLayoutTests:
    """Where hosts sit and what the topology file says, without building anything."""

    def test_hosts_fill_racks_rack_major_with_tracker_and_seeder_in_rack_0(self) -> None:
        """4 racks × 8: peers 0–7 in rack 0 … 24–31 in rack 3, one /24 per rack in
        198.18.0.0/15; the tracker and seeder are extra hosts of rack 0."""
        topo = netns.RackTopology(n_peers=32, rate_mbit=40, racks=4, oversubscription=4)
        assert topo.hosts_per_rack == 8
        assert [h.rack for h in topo.peers] == [r for r in range(4) for _ in range(8)]
        assert (topo.tracker.rack, topo.seeder.rack) == (0, 0)
        assert topo.tracker.addr == netns.TRACKER_ADDR
        assert len(topo.rack_hosts(0)) == 10 and len(topo.rack_hosts(3)) == 8
        for h in topo.hosts:
            addr = ipaddress.ip_address(h.addr)
            assert addr in netns.NET
            assert addr in ipaddress.ip_network(netns.rack_cidr(h.rack))
        assert len({h.addr for h in topo.hosts}) == len({h.mac for h in topo.hosts}) == 34

    def test_uplink_rate_is_rack_capacity_over_oversubscription(self) -> None:
        """8 hosts × 40 Mbit/s at 4:1 give 80 Mbit/s per rack uplink."""
        topo = netns.RackTopology(n_peers=32, rate_mbit=40, racks=4, oversubscription=4)
        assert topo.uplink_mbit == 80

    def test_uneven_racks_are_refused(self) -> None:
        """Peers that do not fill the racks evenly are a configuration error."""
        with pytest.raises(ValueError):
            netns.RackTopology(n_peers=10, rate_mbit=40, racks=4)

    def test_topology_file_places_every_host_in_its_rack(self, tmp_path: Path) -> None:
        """The file written for the tracker locates each host at dc1/row0/rack<its rack>,
        so same-rack hosts are closer to each other than to any other rack."""
        topo = netns.RackTopology(n_peers=8, rate_mbit=40, racks=4, oversubscription=4)
        path = topo.write_topology(str(tmp_path / "racks.topology"))
        parsed = tracker_topology.load(path)
        for h in topo.hosts:
            assert parsed.locate(h.addr) == ("dc1", "row0", f"rack{h.rack}")
        a, b = topo.rack_hosts(1)
        c = topo.rack_hosts(2)[0]
        assert parsed.closeness(parsed.locate(a.addr), parsed.locate(b.addr)) > \
            parsed.closeness(parsed.locate(a.addr), parsed.locate(c.addr))
        assert [p.name for p in tmp_path.iterdir()] == ["racks.topology"]


class RackBoundsTests:
    """bench/racks.py's bounds: the rack cut binds only when an uplink is slower than a host."""

    def test_fast_uplinks_leave_the_plain_bound(self) -> None:
        """4 × 8 hosts at 5 MB/s, 10 MB/s uplinks: F/u = 3.36 s binds (F ÷ uplink is
        1.68 s); uniform sourcing is 8 · F · 3/4 ÷ uplink = 10.07 s."""
        import racks

        b = racks.bounds(16 * 2**20, 32, 4, 5e6, 10e6)
        assert b["plain_s"] == pytest.approx(16 * 2**20 / 5e6)
        assert b["rack_s"] == b["plain_s"]
        assert b["uniform_sourcing_s"] == pytest.approx(8 * 16 * 2**20 * 0.75 / 10e6)

    def test_an_uplink_slower_than_a_host_raises_the_rack_bound(self) -> None:
        """With 2.5 MB/s uplinks every rack without the seeder needs F ÷ 2.5 MB/s."""
        import racks

        b = racks.bounds(16 * 2**20, 32, 4, 5e6, 2.5e6)
        assert b["rack_s"] == pytest.approx(16 * 2**20 / 2.5e6)
        assert b["rack_s"] > b["plain_s"]


@pytest.mark.netns
@pytest.mark.integration
class RackNetnsTests:
    """A real 2-rack network: built, shaped at the uplink, torn down."""

    def test_cross_rack_stream_is_held_to_the_uplink_and_teardown_removes_all(self) -> None:
        """2 racks × 2 hosts at 40 Mbit/s, 4:1 → 20 Mbit/s uplinks.  A stream inside
        rack 1 sends nothing over rack 1's uplink; a stream rack 0 → rack 1 sends all
        its bytes over it, at no more than the uplink rate (+10 %); afterwards no
        namespace of the topology exists."""
        reason = netns.netns_available()
        if reason:
            pytest.skip(reason)
        topo = netns.RackTopology(n_peers=4, rate_mbit=40, racks=2, oversubscription=4)
        with topo:
            assert set(topo.namespaces) <= set(netns.list_namespaces())
            assert len(topo.namespaces) == 6 + 2 + 1  # hosts, rack bridges, spine
            r0, r1 = topo.rack_hosts(0), topo.rack_hosts(1)
            before = topo.uplink_bytes()[1]["in"]
            netns.measure(topo, [r1[0]], [r1[1]], seconds=0.5)
            mid = topo.uplink_bytes()[1]["in"]
            cross = netns.measure(topo, [r0[-1]], [r1[0]], seconds=1.0)
            after = topo.uplink_bytes()[1]
            stream = int(topo.rate_bytes * 1.0)
            assert mid - before < 10_000, "an in-rack stream went over the uplink"
            assert after["in"] - mid >= stream, "the cross-rack stream bypassed the uplink"
            assert topo.uplink_bytes()[0]["out"] >= stream
            assert cross <= 1.1 * topo.uplink_mbit, \
                f"cross-rack {cross:.1f} Mbit/s exceeds the {topo.uplink_mbit:g} Mbit/s uplink"
        left = set(topo.namespaces) & set(netns.list_namespaces())
        assert left == set()


@pytest.mark.netns
@pytest.mark.integration
class RacksBenchSmokeTests:
    """bench/racks.py end to end on 2 racks × 2 hosts (2 MiB, 200 Mbit/s hosts)."""

    def test_both_policies_deliver_and_rack_1_takes_the_payload_over_its_uplink(
            self, tmp_path: Path) -> None:
        """random and rack handouts (and rack with racks 1 s apart) each deliver a
        sha256-verified payload to all 4 peers; rack 1 (no seeder) took in at least
        one payload over its uplink in each run; in the staggered run rack 1's peers
        started only after its gate opened 1 s late; the run leaves no namespace or
        work directory behind."""
        import json
        import subprocess

        reason = netns.netns_available()
        if reason:
            pytest.skip(reason)
        out = tmp_path / "racks.json"
        proc = subprocess.Popen(
            [sys.executable, str(REPO / "bench" / "racks.py"), "real", "--racks", "2",
             "--hosts-per-rack", "2", "--size-mib", "2", "--rate-mbit", "200", "--repeat", "1",
             "--no-verify-shaping", "--run-timeout", "40", "--timeout", "100",
             "--policies", "random,rack,rack-st1", "--variant", "rack-st1=rack",
             "--variant-stagger", "rack-st1=1",
             "--workdir", str(tmp_path), "--json", str(out)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            output, _ = proc.communicate(timeout=110)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        report = json.loads(out.read_text())
        assert [r["policy"] for r in report["records"]] == ["random", "rack", "rack-st1"], output
        for rec in report["records"]:
            assert rec["status"] == "ok", f"{rec['policy']}: {rec.get('reason')}\n{output}"
            assert len(rec["receivers"]) == 4
            assert all(r["t_s"] is not None and r["failure"] is None for r in rec["receivers"])
            assert rec["uplink_in_bytes"][1] >= rec["size_bytes"]
            assert rec["cross_rack_ratio"] > 0
        staggered = report["records"][2]
        rack1 = [r for r in staggered["receivers"] if r["rack"] == 1]
        assert rack1 and all(r["listening_s"] is not None and r["listening_s"] >= 0.9
                             for r in rack1), rack1
        assert staggered["rack_duration_s"][1] == pytest.approx(staggered["rack_last_s"][1] - 1)
        left = [ns for ns in netns.list_namespaces() if ns.startswith(f"mzb{proc.pid}x")]
        assert left == []
        assert proc.returncode == 0, output
        assert [p.name for p in tmp_path.iterdir()] == ["racks.json"]
