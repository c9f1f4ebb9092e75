"""Longer wire fuzzing run: the engine of tests/test_fuzz_wire.py, N cases.

    .venv/bin/python fuzz/fuzz_wire.py --count 200000 [--seed S]

Prints the counters (cases run, per kind, connections closed, verified pieces
written) and exits 1 with the failing case's seed on the first invariant
broken; re-run that seed with ``--seed S --count 1`` to reproduce it.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import test_fuzz_wire  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--count", type=int, default=100_000, help="cases to run")
    ap.add_argument("--seed", type=int, default=None, help="first case seed (default random)")
    args = ap.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    start = time.monotonic()
    try:
        stats = test_fuzz_wire.run(args.count, seed=seed)
    except AssertionError as e:
        print(f"FAILED: {e}", file=sys.stderr)
        return 1
    elapsed = time.monotonic() - start
    print(f"ran {stats['cases']} inputs from seed {seed} in {elapsed:.1f}s: {stats}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
