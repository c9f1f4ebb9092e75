"""Swarm benchmark harness, in memory: the lower bound every time is divided by.

The launch gate and the end-to-end smoke run are in
``tests/integration/test_bench_smoke.py``.
"""

from __future__ import annotations


import pytest

from twins import bench_module

swarm = bench_module("swarm")


class KumarRossBoundTests:
    """The lower bound the benchmark divides every time by."""

    def test_equal_rates_is_one_upload_time(self) -> None:
        """With every host at rate u, T_min = F/u whatever N is (N/(N+1) < 1)."""
        for n in (1, 4, 32):
            assert swarm.kumar_ross_bound(16 * 2**20, 5e6, 5e6, [5e6] * n) == 16 * 2**20 / 5e6

    def test_weak_peers_make_the_swarm_term_dominate(self) -> None:
        """When peers upload little, N·F/(u_s + Σu_i) is the binding term."""
        bound = swarm.kumar_ross_bound(1000, 100.0, 1000.0, [10.0] * 10)
        assert bound == pytest.approx(10 * 1000 / 200.0)

    def test_slow_downloader_binds(self) -> None:
        """The slowest downloader bounds the time by F/d_min."""
        assert swarm.kumar_ross_bound(1000, 100.0, 10.0, [100.0] * 2) == 100.0
