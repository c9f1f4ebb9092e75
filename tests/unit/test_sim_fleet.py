"""A small simulated deploy, in memory: real swarms, tracker and wire over the model."""

from __future__ import annotations

import json

import pytest

from murder.sim import cli
from murder.peer.config import SwarmConfig
from murder.sim.fleet import FleetConfig, build_and_run

SMALL = FleetConfig(hosts=20, hosts_per_rack=5, nic_bps=1e9, oversubscription=4,
                    payload=4 * 2**20, piece_length=2**18, real_piece_length=2**14,
                    numwant=8, max_connections=12, seed=5)


class FleetTests:
    """build_and_run drives the real core to completion on virtual time."""

    def test_small_fleet_completes_deterministically(self):
        """20 hosts in 4 racks all complete, no faster than the Kumar–Ross bound,
        the seeder sends about one copy, and the same seed gives the same run."""
        first = build_and_run(SMALL)
        assert first.completed == 20
        assert first.time_to_last is not None
        assert 1.0 <= first.ratio < 20.0
        assert 0.99 <= first.seeder_upload_ratio < 2.0
        assert first.cross_rack_ratio is not None and first.cross_rack_ratio > 0.2
        assert len(first.last_rack_finish) == 4
        again = build_and_run(SMALL)
        assert again.completion_times == first.completion_times
        assert again.events == first.events

    def test_rack_aware_keeps_bytes_in_racks(self):
        """With few peers per list, the rack-aware handout moves fewer bytes across
        racks than the random one, and every host still completes."""
        rand = build_and_run(SMALL)
        rack = build_and_run(SMALL.__class__(**{**SMALL.__dict__, "policy": "rack"}))
        assert rack.completed == 20
        assert rack.cross_rack_bytes < rand.cross_rack_bytes

    def test_near_preference_cuts_cross_rack_bytes(self):
        """Rack-aware lists with the tracker's near networks (peers ask far
        connections only for what no near one holds) move fewer bytes across
        racks than the same lists without them (``rack:nonear``); all complete."""
        base = {**SMALL.__dict__, "policy": "rack", "payload": 8 * 2**20}
        near = build_and_run(FleetConfig(**base))
        nonear = build_and_run(FleetConfig(**{**base, "near": False}))
        assert near.completed == nonear.completed == 20
        assert near.cross_rack_bytes < 0.8 * nonear.cross_rack_bytes

    def test_per_process_cpu_slows_a_crowded_machine(self):
        """With every host a process on one 2-core machine (start-up as CPU work,
        a CPU cost per byte), the same deploy takes longer than with a CPU per
        host, and start-up ends later with more hosts sharing the cores."""
        base = FleetConfig(hosts=8, nic_bps=40e6, payload=2**20, piece_length=2**17,
                           real_piece_length=2**17, seed=3)
        free = build_and_run(base)
        crowded = build_and_run(FleetConfig(**{**base.__dict__, "cpu_cores": 2.0,
                                               "cpu_s_per_mib": 0.05,
                                               "startup_cpu_s": 0.3}))
        assert crowded.completed == free.completed == 8
        assert crowded.time_to_last > free.time_to_last
        # 8 start-ups of 0.2-0.4 CPU-s on 2 cores: none before 0.8 s, all by 1.6 s.
        assert 0.8 <= crowded.last_start <= 1.6

    def test_probe_samples_the_running_fleet(self):
        """A probe passed to build_and_run sees the clock, network and hosts
        before the clock runs; bench/sim_timeline.py's sampler records link
        use until every host is done (holders grow from the seeder alone to
        every host, and uplinks carried something)."""
        from twins import bench_module

        timeline = bench_module("sim_timeline")
        sampler = timeline.Sampler(0.01)
        result = build_and_run(SMALL, probe=sampler)
        assert result.completed == 20
        rows = sampler.rows
        # The first sample is 0.01 s in: a first piece may have arrived.
        assert rows[0]["holders"] <= 2 and rows[-1]["holders"] == 21
        assert [r["holders"] for r in rows] == sorted(r["holders"] for r in rows)
        assert rows[-1]["complete"] <= 20 and rows[-1]["t"] <= result.time_to_last + 0.01
        assert max(r["fleet_up"] for r in rows) > 0.0
        assert all(0.0 <= r["up_util"] <= 1.0 for r in rows)
        assert len(sampler.first_piece) == 20
        assert all(t <= result.time_to_last + 0.01 for t in sampler.first_piece.values())

    def test_cli_json(self, tmp_path, capsys):
        """`murder simulate` prints one line per policy and writes the JSON."""
        out = tmp_path / "sim.json"
        code = cli.main("simulate", [
            "--hosts", "6", "--nic", "100M", "--payload", "1M", "--piece-length", "64K",
            "--real-piece-length", "16K", "--policy", "random,rack,rack:nonear",
            "--hosts-per-rack", "3",
            "--oversubscription", "2", "--json", str(out)])
        assert code == 0
        lines = capsys.readouterr().out.splitlines()
        assert lines[0].startswith("policy")
        assert [ln.split()[0] for ln in lines[1:]] == ["random", "rack", "rack:nonear"]
        doc = json.loads(out.read_text())
        assert [r["completed"] for r in doc["results"]] == [6, 6, 6]
        assert [r["config"]["near"] for r in doc["results"]] == [True, True, False]
        assert doc["results"][0]["time_over_bound"] >= 1.0

    @pytest.mark.parametrize("args, message", [
        (["--hosts", "0"], "--hosts"),
        (["--policy", "nearest"], "unknown --policy"),
        (["--piece-length", "24K"], "multiple of --real-piece-length"),
        (["--startup", "3:1"], "--startup"),
        (["--nic", "fast"], "could not convert"),
        (["--core", "no_such_knob=1"], "SwarmConfig field"),
        (["--core", "upload_slots"], "NAME=VALUE"),
        (["--core", "fast=maybe"], "true or false"),
    ])
    def test_cli_refuses(self, args, message):
        """Bad options fail with a one-line usage error."""
        from twisted.python import usage

        with pytest.raises(usage.UsageError, match=message):
            cli.Options().parseOptions(args)

    def test_cli_core_settings_reach_every_host(self):
        """``--core NAME=VALUE`` sets SwarmConfig fields (typed as the field) for
        every simulated host, applied after the fidelity rescaling."""
        from murder.sim.fleet import swarm_config

        options = cli.Options()
        options.parseOptions(["--core", "upload_slots=0,far_turns_first=false,request_horizon=0.5,"
                              "max_pipeline=3", "--piece-length", "1M", "--real-piece-length",
                              "16K"])
        cfg = options.configs[0]
        assert dict(cfg.core) == {"upload_slots": 0, "far_turns_first": False,
                                  "request_horizon": 0.5, "max_pipeline": 3}
        swarm = swarm_config(cfg)
        assert (swarm.upload_slots, swarm.far_turns_first, swarm.max_pipeline) == (0, False, 3)
        assert swarm_config(FleetConfig()).upload_slots == SwarmConfig.upload_slots
