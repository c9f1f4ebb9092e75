#!/usr/bin/env python3
"""Fuzz murder.metainfo.parse: every input must give a Metainfo or a MetainfoError.

Untrusted torrent bytes reach ``parse`` from disk and from the network, so any
other exception (or a "valid" torrent carrying a path that escapes the
destination) is a bug.  Inputs are valid torrents mutated at the byte level
(flips, truncation, insertion, splicing) and at the structure level (deleted
keys, swapped types, hostile paths, wrong lengths, deep nesting), plus random
bencode values and random bytes.

Usage:
  python fuzz/fuzz_metainfo.py [--count N] [--seed S]      seeded mutation loop
  python fuzz/fuzz_metainfo.py --atheris [libFuzzer args]  coverage-guided (pip install atheris)

Both print how many inputs ran; the loop also counts inputs that hang (more
than 0.25 s of CPU each) and exits 1 if any did.  tests/test_fuzz_metainfo.py imports
``seed_corpus``, ``mutate`` and ``check`` from here for the short per-run fuzz.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import re
import signal
import sys
import time
from collections import Counter
from typing import Any

import bencodepy

from murder.errors import MetainfoError
from murder.metainfo import Metainfo, parse

HOSTILE_PATH_ELEMENTS: list[Any] = [
    b"..", b".", b"", b"/", b"/etc/passwd", b"a/b", b"..\\..\\x", b"C:\\x", b"C:", b"\x00",
    b"a\x00b", b"\xff\xfe", b"con", b"~", b"-rf", b" ", b"..." , 7, -1, [], {}, [b".."],
]


def _pieces(total: int, plen: int, rng: random.Random | None = None) -> bytes:
    count = -(-total // plen)
    if rng is None:
        return b"".join(hashlib.sha1(i.to_bytes(4, "big")).digest() for i in range(count))
    return rng.randbytes(20 * count)


def seed_corpus() -> list[bytes]:
    """Valid torrents of every shape parse() accepts."""
    announce = b"http://127.0.0.1:8998/announce"
    single = {b"announce": announce, b"creation date": 1_700_000_000, b"comment": b"seed",
              b"info": {b"length": 100_000, b"name": b"release.tgz", b"piece length": 2**14,
                        b"pieces": _pieces(100_000, 2**14)}}
    files = [{b"length": 5000, b"path": [b"bin", b"app"]},
             {b"length": 0, b"path": [b"empty"]},
             {b"length": 40_000, b"path": [b"lib", b"x", b"y.so"]},
             {b"length": 3, b"path": [b"README"]}]
    multi = {b"announce": announce,
             b"announce-list": [[announce], [b"http://b/announce", b"udp://c:1"]],
             b"info": {b"files": files, b"name": b"release", b"piece length": 2**15,
                       b"pieces": _pieces(45_003, 2**15), b"private": 1}}
    trackerless = {b"info": {b"length": 1, b"name": b"x", b"piece length": 2**18,
                             b"pieces": _pieces(1, 2**18)}, b"url-list": [b"http://m/"]}
    hybrid_like = {b"announce": announce, b"piece layers": {},
                   b"info": {b"files": files[:1], b"name": b"h", b"piece length": 2**14,
                             b"pieces": _pieces(5000, 2**14), b"meta version": 2,
                             b"file tree": {b"bin": {b"app": {b"": {b"length": 5000,
                                                                   b"pieces root": b"r" * 32}}}}}}
    return [bencodepy.encode(t) for t in (single, multi, trackerless, hybrid_like)]


def random_valid_torrent(rng: random.Random) -> bytes:
    """A valid torrent of random shape: names, file tree, lengths, piece length, extras."""
    def name() -> bytes:
        alphabet = ["a", "Z", "0", "-", "_", ".", " ", "é", "日", "\u200b", "~"]
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 9)))
        return (text if text not in (".", "..") else "dot").encode()

    plen = 2 ** rng.randrange(14, 23)
    info: dict = {b"name": name(), b"piece length": plen}
    if rng.random() < 0.4:
        total = rng.randrange(1, plen * 50)
        info[b"length"] = total
    else:
        paths: list[list[bytes]] = []
        for _ in range(rng.randrange(1, 8)):
            path = [name() for _ in range(rng.randrange(1, 4))]
            if all(path[:len(p)] != p and p[:len(path)] != path for p in paths):
                paths.append(path)
        lengths = [rng.choice([0, 1, rng.randrange(plen * 10)]) for _ in paths]
        lengths[0] = lengths[0] or 1
        info[b"files"] = [{b"length": n, b"path": p} for p, n in zip(paths, lengths)]
        total = sum(lengths)
    info[b"pieces"] = _pieces(total, plen, rng)
    if rng.random() < 0.3:
        info[b"private"] = rng.choice([0, 1])
    top: dict = {b"info": info}
    if rng.random() < 0.9:
        top[b"announce"] = b"http://t%d:8998/announce" % rng.randrange(10)
    if rng.random() < 0.3:
        top[b"announce-list"] = [[b"http://a/announce"], [], [b"udp://b:1", b"http://c/"]]
    if rng.random() < 0.3:
        top[b"comment"] = rng.randbytes(rng.randrange(10))
    if rng.random() < 0.3:
        top[b"creation date"] = rng.randrange(2**40)
    return bencodepy.encode(top)


# --------------------------------------------------------------- structure level


def _random_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(6 if depth < 4 else 3)
    if kind == 0:
        return rng.choice([0, 1, -1, 2**14, 2**31, 2**63, -2**70, rng.randrange(-10**6, 10**6)])
    if kind == 1:
        return rng.randbytes(rng.randrange(0, 41))
    if kind == 2:
        return rng.choice(HOSTILE_PATH_ELEMENTS)
    if kind == 3:
        return [_random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    if kind == 4:
        return {rng.choice([b"length", b"path", b"name", b"files", b"pieces", b"piece length",
                            rng.randbytes(3)]): _random_value(rng, depth + 1)
                for _ in range(rng.randrange(4))}
    deep: Any = b"x"
    for _ in range(rng.randrange(20, 60)):
        deep = [deep] if rng.random() < 0.5 else {b"k": deep}
    return deep


def _containers(value: Any, out: list) -> list:
    """Every (container, key) slot in a decoded value."""
    if isinstance(value, dict):
        for k, v in value.items():
            out.append((value, k))
            _containers(v, out)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out.append((value, i))
            _containers(v, out)
    return out


def _mutate_structure(rng: random.Random, data: bytes) -> bytes | None:
    try:
        top = bencodepy.decode(data)
    except Exception:
        return None
    slots = _containers(top, [])
    if not slots:
        return None
    info = top.get(b"info") if isinstance(top, dict) else None
    op = rng.randrange(8) if rng.random() < 0.3 else rng.randrange(7)
    container, key = rng.choice(slots)
    if op == 0:  # delete a key / list item
        del container[key]
    elif op == 1:  # swap the type of a value
        container[key] = _random_value(rng)
    elif op == 2 and isinstance(info, dict) and isinstance(info.get(b"files"), list) \
            and info[b"files"]:  # hostile path in a file entry
        entry = rng.choice(info[b"files"])
        if isinstance(entry, dict):
            old = entry.get(b"path")
            path = list(old) if isinstance(old, list) and old else [b"a"]
            path.insert(rng.randrange(len(path) + 1), rng.choice(HOSTILE_PATH_ELEMENTS))
            entry[b"path"] = path
    elif op == 3 and isinstance(info, dict):  # hostile name
        info[b"name"] = rng.choice(HOSTILE_PATH_ELEMENTS)
    elif op == 4 and isinstance(info, dict) and isinstance(info.get(b"files"), list) \
            and info[b"files"]:  # duplicate or nest one file under another
        files = info[b"files"]
        a = rng.choice(files)
        if isinstance(a, dict) and isinstance(a.get(b"path"), list):
            b = dict(a)
            b[b"path"] = list(a[b"path"]) + ([b"child"] if rng.random() < 0.5 else [])
            files.insert(rng.randrange(len(files) + 1), b)
    elif op == 5 and isinstance(info, dict):  # lengths and piece counts that disagree
        field = rng.choice([b"length", b"piece length", b"pieces"])
        if field == b"pieces":
            info[field] = rng.randbytes(rng.choice([0, 19, 20, 21, 40, 60, 2000]))
        else:
            info[field] = rng.choice([0, -1, 1, 2**14, 2**14 + 1, 2**40, -2**63])
    elif op == 6:  # add an unknown key anywhere
        if isinstance(container, dict):
            container[rng.randbytes(rng.randrange(1, 6))] = _random_value(rng)
        else:
            container.append(_random_value(rng))
    else:  # replace the whole value with random bencode
        top = _random_value(rng)
    try:
        return bencodepy.encode(top)
    except Exception:
        return None


# ----------------------------------------------------------------- byte level


def _mutate_bytes(rng: random.Random, data: bytes, corpus: list[bytes],
                  negative_lengths: bool) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.choice([1, 1, 1, 2, 4, 8])):
        op = rng.randrange(8 if negative_lengths else 7)
        pos = rng.randrange(len(buf) + 1)
        if op == 7:  # make a string length negative ("3:abc" -> "-3:abc")
            starts = [m.start() for m in re.finditer(rb"(?<![0-9-])[0-9]+:", bytes(buf))]
            if starts:
                at = rng.choice(starts)
                buf[at:at] = b"-"
            continue
        if op == 0 and buf:  # flip a bit
            i = min(pos, len(buf) - 1)
            buf[i] ^= 1 << rng.randrange(8)
        elif op == 1 and buf:  # replace a byte with a bencode-significant one
            buf[min(pos, len(buf) - 1)] = rng.choice(b"ilde0123456789:-")
        elif op == 2:  # truncate
            del buf[pos:]
        elif op == 3:  # insert random bytes
            buf[pos:pos] = rng.randbytes(rng.randrange(1, 8))
        elif op == 4:  # delete a range
            del buf[pos:pos + rng.randrange(1, 16)]
        elif op == 5:  # duplicate a range
            buf[pos:pos] = buf[pos:pos + rng.randrange(1, 32)]
        else:  # splice with another input
            other = rng.choice(corpus)
            cut = rng.randrange(len(other) + 1)
            buf = buf[:pos] + other[cut:]
    return bytes(buf)


def mutate(rng: random.Random, corpus: list[bytes], negative_lengths: bool = False) -> bytes:
    """One fuzz input: mostly mutated valid torrents, sometimes pure noise.

    ``negative_lengths`` adds a mutation aimed at bencode.py 4.1's decoder,
    which accepts "-6:" as a dict key length and loops forever on some inputs.
    """
    roll = rng.random()
    if roll < 0.03:
        return rng.randbytes(rng.randrange(0, 200))
    if roll < 0.06:
        return bencodepy.encode(_random_value(rng))
    if roll < 0.15:
        return random_valid_torrent(rng)
    data = rng.choice(corpus) if roll < 0.6 else random_valid_torrent(rng)
    if roll < 0.6:
        for _ in range(rng.choice([1, 1, 2, 3])):
            data = _mutate_structure(rng, data) or data
        return data
    return _mutate_bytes(rng, data, corpus, negative_lengths)


# --------------------------------------------------------------------- oracle

_SAFE_ELEMENT = re.compile(r"^(?!\.{1,2}$)[^/\\\x00]+$")


def check(data: bytes) -> str:
    """Parse ``data``; return "ok" or the error's reason shape.

    Raises AssertionError when a parsed torrent breaks an invariant, and lets
    any exception other than MetainfoError escape: both are bugs.
    """
    try:
        m = parse(data)
    except MetainfoError as e:
        assert str(e).startswith("invalid torrent: "), str(e)
        # The reason's shape, without the values: how many kinds of refusal we reach.
        return re.sub(r"'[^']*'|\d+|\[\d+\]", "#", e.reason)
    assert isinstance(m, Metainfo)
    assert len(m.info_hash) == 20
    assert all(len(p) == 20 for p in m.pieces)
    assert m.total_length > 0
    assert m.num_pieces == -(-m.total_length // m.piece_length)
    assert sum(m.piece_size(i) for i in range(m.num_pieces)) == m.total_length
    offset = 0
    seen = set()
    for f in m.files:
        assert f.length >= 0 and f.offset == offset
        offset += f.length
        assert all(isinstance(e, str) and _SAFE_ELEMENT.match(e) for e in f.path), f.path
        assert f.path not in seen
        seen.add(f.path)
    for f in m.files:  # no file may be a directory of another
        assert not any(f.path[:k] in seen for k in range(1, len(f.path)))
    assert parse(m.encode()) == m
    return "ok"


class Hang(BaseException):
    """One input ran longer than the per-input limit (BaseException: no except eats it)."""


def _on_alarm(signum: int, frame: Any) -> None:
    raise Hang()


def run(count: int, seed: int, limit: float = 0.25, negative_lengths: bool = False,
        max_hangs: int | None = None) -> tuple[int, Counter, list[bytes]]:
    """Run ``count`` inputs from ``seed``; return (count, outcomes, inputs that hung).

    Each input gets ``limit`` seconds of this process's CPU time (ITIMER_PROF,
    SIGPROF); one that runs longer is counted as "HANG" and kept, since a
    parser that never returns is a denial of service.  CPU time, not wall
    time: on a loaded machine (CI beside other jobs) a quick parse can wait
    longer than the limit for a core, and a wall-clock timer called it a hang.
    The run stops early after ``max_hangs`` hangs (the returned count says how
    many inputs ran).
    """
    rng = random.Random(seed)
    corpus = seed_corpus()
    outcomes: Counter = Counter()
    hangs: list[bytes] = []
    previous = signal.signal(signal.SIGPROF, _on_alarm)
    ran = 0
    try:
        for _ in range(count):
            if max_hangs is not None and len(hangs) >= max_hangs:
                break
            ran += 1
            data = mutate(rng, corpus, negative_lengths)
            signal.setitimer(signal.ITIMER_PROF, limit)
            try:
                outcome = check(data)
            except Hang:
                outcome = "HANG"
                hangs.append(data)
            except Exception:
                print(f"FAILED on input (seed {seed}): {data!r}", file=sys.stderr)
                raise
            finally:
                signal.setitimer(signal.ITIMER_PROF, 0)
            outcomes[outcome] += 1
            if len(data) < 4096 and outcome == "ok" and rng.random() < 0.01:
                corpus.append(data)  # grow the corpus with inputs that still decode
    finally:
        signal.signal(signal.SIGPROF, previous)
    return ran, outcomes, hangs


def _atheris_main(argv: list[str]) -> None:
    """Coverage-guided run; libFuzzer prints "Done N runs", we print every 10,000."""
    import os
    import tempfile

    import atheris

    # parse() and bencodepy are imported already: instrument what is loaded.
    atheris.instrument_all()
    ran = 0

    def one_input(data: bytes) -> None:
        nonlocal ran
        ran += 1
        if ran % 10_000 == 0:
            print(f"atheris: ran {ran} inputs", flush=True)
        check(data)

    corpus_dir = tempfile.mkdtemp(prefix="murder-fuzz-corpus-")
    rng = random.Random(0)
    seeds = seed_corpus() + [random_valid_torrent(rng) for _ in range(20)]
    for i, seed in enumerate(seeds):
        with open(os.path.join(corpus_dir, f"seed{i}"), "wb") as f:
            f.write(seed)
    atheris.Setup([sys.argv[0], *argv, corpus_dir], one_input)
    atheris.Fuzz()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=200_000, help="inputs to run (plain loop)")
    parser.add_argument("--seed", type=int, default=None, help="RNG seed (default: time)")
    parser.add_argument("--max-hangs", type=int, default=5, help="stop after this many hangs")
    parser.add_argument("--no-negative-lengths", action="store_true",
                        help="skip the mutation that makes bencode string lengths negative")
    parser.add_argument("--verbose", "-v", action="store_true", help="print each outcome's count")
    parser.add_argument("--atheris", action="store_true",
                        help="coverage-guided fuzzing with atheris; remaining args go to libFuzzer")
    args, rest = parser.parse_known_args(argv)
    if args.atheris:
        _atheris_main(rest)
        return 0
    if args.count < 1:
        parser.error("--count must be positive")
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    seed = args.seed if args.seed is not None else time.time_ns() % 2**32
    started = time.monotonic()
    count, outcomes, hangs = run(args.count, seed, negative_lengths=not args.no_negative_lengths,
                                 max_hangs=args.max_hangs)
    elapsed = time.monotonic() - started
    errors = count - outcomes["ok"] - outcomes["HANG"]
    shapes = len(set(outcomes) - {"ok", "HANG"})
    print(f"ran {count} inputs (seed {seed}) in {elapsed:.1f} s: {outcomes['ok']} valid, "
          f"{errors} MetainfoError, {shapes} distinct error shapes, {len(hangs)} hangs")
    if hangs:
        print(f"shortest hanging input: {min(hangs, key=len)!r}")
    if args.verbose:
        for shape, n in outcomes.most_common():
            print(f"{n:8d}  {shape}")
    return 1 if hangs else 0


if __name__ == "__main__":
    sys.exit(main())
