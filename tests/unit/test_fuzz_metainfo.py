"""Fuzz metainfo.parse on every run: each input yields a Metainfo or a MetainfoError.

The mutators and the oracle live in fuzz/fuzz_metainfo.py (also a standalone,
longer fuzz target).  The seed is fixed so a failure reproduces; set
MURDER_FUZZ_SEED to explore other inputs.  The oracle also checks that every
torrent parse() accepts is safe to lay out on disk (no '..', no separators, no
duplicates, no file under a file) and round-trips through encode().
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import random
from pathlib import Path

import bencodepy
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from murder.metainfo import FileEntry, parse


_FUZZ = Path(__file__).resolve().parents[2] / "fuzz" / "fuzz_metainfo.py"
_spec = importlib.util.spec_from_file_location("fuzz_metainfo", _FUZZ)
fuzz = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fuzz)

COUNT = 12_000
SEED = int(os.environ.get("MURDER_FUZZ_SEED", "20240611"))


class MutationFuzzTests:
    """Mutated and random torrents never raise anything but MetainfoError."""

    def test_mutated_inputs(self) -> None:
        """12,000 mutated/random inputs: Metainfo or MetainfoError, valid ones safe."""
        count, outcomes, hangs = fuzz.run(COUNT, SEED)
        valid = outcomes["ok"]
        print(f"\nmetainfo fuzz: ran {count} inputs (seed {SEED}): {valid} valid, "
              f"{count - valid} MetainfoError, {len(outcomes) - 1} distinct error shapes, "
              f"{len(hangs)} hangs")
        assert hangs == []
        assert count >= 10_000
        assert sum(outcomes.values()) == count
        # The mix must exercise both sides and most of the validator's reasons.
        assert valid >= count // 20
        assert count - valid >= count // 2
        assert len(outcomes) - 1 >= 25

    def test_negative_string_lengths_do_not_hang(self) -> None:
        """Inputs with negative bencode string lengths are refused within 0.25 s each."""
        count, outcomes, hangs = fuzz.run(3000, SEED, negative_lengths=True, max_hangs=1)
        assert hangs == [], f"parse() hung on {hangs[0]!r} after {count} inputs"

    def test_seed_corpus_is_valid(self) -> None:
        """The seeds are valid torrents, so mutations start from accepted input."""
        for data in fuzz.seed_corpus():
            assert fuzz.check(data) == "ok"
        rng = random.Random(SEED)
        for _ in range(200):
            assert fuzz.check(fuzz.random_valid_torrent(rng)) == "ok"

    def test_oracle_catches_unsafe_paths(self) -> None:
        """The oracle itself rejects what parse must refuse (guards against a blind oracle)."""
        seed = bencodepy.decode(fuzz.seed_corpus()[1])
        seed[b"info"][b"files"][0][b"path"] = [b".."]
        assert fuzz.check(bencodepy.encode(seed)).startswith("path element")
        assert fuzz.check(b"not bencode").startswith("not bencode")

    @pytest.mark.parametrize("bad_path", [("t", ".."), ("t", "a/b"), ("t", "")])
    def test_oracle_flags_a_parser_that_accepts_traversal(self, monkeypatch, bad_path) -> None:
        """If parse() ever let a hostile path through, check() would fail loudly."""
        good = parse(fuzz.seed_corpus()[0])
        evil = dataclasses.replace(good, files=(FileEntry(bad_path, good.total_length, 0),))
        monkeypatch.setattr(fuzz, "parse", lambda data: evil)
        with pytest.raises(AssertionError):
            fuzz.check(b"anything")

    def test_oracle_flags_other_exceptions(self, monkeypatch) -> None:
        """An exception other than MetainfoError escapes check() (it is a bug)."""
        def broken(data: bytes):
            raise KeyError(b"info")

        monkeypatch.setattr(fuzz, "parse", broken)
        with pytest.raises(KeyError):
            fuzz.check(b"anything")


_bencode = st.recursive(
    st.integers() | st.binary(max_size=30) | st.sampled_from(fuzz.HOSTILE_PATH_ELEMENTS),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from([b"info", b"name", b"length", b"files", b"path", b"pieces",
                         b"piece length", b"announce", b"announce-list", b"private"])
        | st.binary(max_size=6), children, max_size=6),
    max_leaves=30,
)


class StructuredFuzzTests:
    """Hypothesis-built bencode values shaped like torrents."""

    @settings(max_examples=400, deadline=None)
    @given(_bencode)
    def test_any_bencode_value(self, value) -> None:
        """Any bencode value, torrent-shaped or not, is accepted or refused cleanly."""
        fuzz.check(bencodepy.encode(value))

    @settings(max_examples=200, deadline=None)
    @given(st.binary(max_size=300))
    def test_any_bytes(self, data: bytes) -> None:
        """Arbitrary bytes never raise anything but MetainfoError."""
        fuzz.check(data)
