"""Micro-benchmark: cost of one announce on the Redis store, client and server side.

Starts a private ``redis-server`` (unix socket in a temporary directory, no
persistence), fills 200 swarms of 50 peers, then times 10,000 announces (the
mix of ``bench/udp_announce_load.c``) through :class:`RedisPeerStore`: the
tracker's CPU per announce (this process), the wall time per announce, and
``redis-server``'s own ``usec_per_call`` of ``EVALSHA`` (from ``INFO
commandstats``).  Run it with an export of an older commit on PYTHONPATH to
compare script versions (e.g. before the ``--max-peers`` cap's global set).

    .venv/bin/python bench/tracker_redis_cost.py [--announces 10000] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--announces", type=int, default=10_000)
    parser.add_argument("--json", type=Path, default=HERE / "results" / "tracker_redis_cost.json")
    args = parser.parse_args()
    if not shutil.which("redis-server"):
        print("redis-server is not installed (Debian redis-server)", file=sys.stderr)
        return 1
    import redis
    from twisted.internet.task import Clock

    from murder.tracker.announce_codec import AnnounceRequest
    from murder.tracker.redisstore import RedisPeerStore

    with tempfile.TemporaryDirectory(prefix="redis-cost-") as tmp:
        sock = str(Path(tmp) / "redis.sock")
        server = subprocess.Popen(["redis-server", "--port", "0", "--unixsocket", sock,
                                   "--save", "", "--appendonly", "no", "--dir", tmp],
                                  stdout=subprocess.DEVNULL)
        try:
            client = redis.Redis(unix_socket_path=sock)
            deadline = time.monotonic() + 15
            while True:
                try:
                    client.ping()
                    break
                except redis.RedisError:
                    if time.monotonic() > deadline or server.poll() is not None:
                        raise RuntimeError("redis-server did not start") from None
                    time.sleep(0.05)
            store = RedisPeerStore(Clock(), f"unix://{sock}?db=0", max_torrents=100_000,
                                   max_peers=1_000_000)
            rng = random.Random(1)
            hashes = [rng.randbytes(20) for _ in range(200)]
            peer_ids = [b"-UL0001-" + rng.randbytes(12) for _ in range(50)]

            def request(ih: bytes, n: int, left: int) -> AnnounceRequest:
                return AnnounceRequest(ih, peer_ids[n], "127.0.0.1", 6000 + n, 0, 0, left, "",
                                       True, True, 50)

            for ih in hashes:
                for n in range(50):
                    store.announce(request(ih, n, 1000))
            client.config_resetstat()
            cpu, wall = time.process_time(), time.monotonic()
            for _ in range(args.announces):
                store.announce(request(hashes[rng.randrange(200)], rng.randrange(50),
                                       0 if rng.randrange(4) == 0 else 1000))
            cpu, wall = time.process_time() - cpu, time.monotonic() - wall
            evalsha = client.info("commandstats")["cmdstat_evalsha"]
        finally:
            server.terminate()
            server.wait(10)
    n = args.announces
    results = {"announces": n, "tracker_cpu_us": cpu / n * 1e6, "wall_us": wall / n * 1e6,
               "redis_evalsha_us": evalsha["usec_per_call"], "evalsha_calls": evalsha["calls"]}
    print(f"{n:,} announces on the Redis store (200 swarms x 50 peers): tracker CPU "
          f"{results['tracker_cpu_us']:.1f} us, wall {results['wall_us']:.1f} us, "
          f"redis-server EVALSHA {results['redis_evalsha_us']:.1f} us per call")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1) + "\n")
    print(f"results: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
