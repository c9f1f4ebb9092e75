"""``murder keygen``, ``murder make-torrent --sign`` and ``murder verify`` end to end."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import bencodepy
import pytest

from murder import cli, metainfo, trust

ANNOUNCE = "http://127.0.0.1:8998/announce"


@pytest.fixture(autouse=True)
def _no_ambient_trust(monkeypatch):
    """The developer's own MURDER_TRUST must not leak into these tests."""
    monkeypatch.delenv(trust.TRUST_ENV, raising=False)


def _keygen(capsys, prefix: Path) -> str:
    """Run ``murder keygen --out prefix``; return the printed fingerprint."""
    assert cli.main(["keygen", "--out", str(prefix)]) == 0
    out = capsys.readouterr().out
    found = re.search(r"^fingerprint: ([0-9a-f]{16})$", out, re.M)
    assert found, out
    return found.group(1)


def _make(capsys, payload: Path, output: Path, *extra: str) -> int:
    rc = cli.main(["make-torrent", "--announce", ANNOUNCE, "-q", "-o", str(output),
                   *extra, str(payload)])
    capsys.readouterr()
    return rc


class KeygenCommandTests:
    """``murder keygen`` writes the pair, reports it, and protects existing keys."""

    def test_writes_pair_and_prints_fingerprint(self, tmp_path, capsys):
        """Exit 0; prints both paths and the fingerprint of the written public key."""
        prefix = tmp_path / "release"
        assert cli.main(["keygen", "--out", str(prefix)]) == 0
        out = capsys.readouterr().out
        public = trust.load_public_key(str(prefix) + ".pub")
        assert out.splitlines() == [
            f"private key: {prefix} (mode 0600, keep it secret)",
            f"public key:  {prefix}.pub",
            f"fingerprint: {trust.fingerprint(public)}",
        ]
        assert stat.S_IMODE(os.stat(prefix).st_mode) == 0o600

    def test_default_prefix(self, tmp_path, capsys, monkeypatch):
        """Without --out the pair is murder-signing-key{,.pub} in the current directory."""
        monkeypatch.chdir(tmp_path)
        assert cli.main(["keygen"]) == 0
        capsys.readouterr()
        assert sorted(p.name for p in tmp_path.iterdir()) == \
            ["murder-signing-key", "murder-signing-key.pub"]

    def test_refuses_overwrite_then_force(self, tmp_path, capsys):
        """A second keygen fails with exit 1 and keeps the key; --force replaces it."""
        prefix = tmp_path / "k"
        first = _keygen(capsys, prefix)
        original = prefix.read_bytes()
        assert cli.main(["keygen", "--out", str(prefix)]) == 1
        assert capsys.readouterr().err == (
            f"murder keygen: cannot use key file {prefix}: already exists "
            f"(use --force to overwrite)\n")
        assert prefix.read_bytes() == original
        assert cli.main(["keygen", "--out", str(prefix), "--force"]) == 0
        assert first not in capsys.readouterr().out
        assert prefix.read_bytes() != original

    def test_extra_argument_is_a_usage_error(self, tmp_path, capsys):
        """keygen takes no positional argument: exit 2."""
        assert cli.main(["keygen", str(tmp_path / "k")]) == 2
        assert "murder keygen:" in capsys.readouterr().err
        assert list(tmp_path.iterdir()) == []


class VerifyCommandTests:
    """``murder verify`` prints one line and exits 0, or one reason and exits 1."""

    @pytest.fixture
    def setup(self, tmp_path, tmp_payload, capsys):
        """A key pair, a payload, and that payload's torrent signed with the key."""
        fp = _keygen(capsys, tmp_path / "k")
        payload = tmp_payload(os.urandom(300_000))
        torrent = tmp_path / "signed.torrent"
        assert _make(capsys, payload, torrent, "--sign", str(tmp_path / "k")) == 0
        return tmp_path, payload, torrent, fp

    def test_signed_torrent_verifies(self, setup, capsys):
        """--trust PUBKEY: exit 0 with the signer and the info hash."""
        tmp_path, _, torrent, fp = setup
        assert cli.main(["verify", "--trust", str(tmp_path / "k.pub"), str(torrent)]) == 0
        info_hash = metainfo.load(str(torrent)).info_hash.hex()
        assert capsys.readouterr().out == \
            f"{torrent}: signed by {fp}, info hash {info_hash}\n"

    def test_signing_keeps_info_hash(self, setup, capsys):
        """make-torrent with and without --sign gives the same info hash."""
        tmp_path, payload, torrent, _ = setup
        plain = tmp_path / "plain.torrent"
        assert _make(capsys, payload, plain) == 0
        assert metainfo.load(str(plain)).info_hash == metainfo.load(str(torrent)).info_hash

    def test_trust_directory_and_repeated_option(self, setup, capsys):
        """--trust accepts a directory of *.pub files and may be repeated."""
        tmp_path, _, torrent, fp = setup
        keys = tmp_path / "keys"
        keys.mkdir()
        _keygen(capsys, keys / "other")
        (keys / "release.pub").write_bytes((tmp_path / "k.pub").read_bytes())
        assert cli.main(["verify", "--trust", str(keys / "other.pub"),
                         "--trust", str(keys), str(torrent)]) == 0
        assert f"signed by {fp}" in capsys.readouterr().out

    def test_murder_trust_environment(self, setup, capsys, monkeypatch):
        """Without --trust the keys come from MURDER_TRUST; --trust overrides it."""
        tmp_path, _, torrent, fp = setup
        _keygen(capsys, tmp_path / "other")
        monkeypatch.setenv(trust.TRUST_ENV, os.pathsep.join(
            [str(tmp_path / "other.pub"), str(tmp_path / "k.pub")]))
        assert cli.main(["verify", str(torrent)]) == 0
        assert f"signed by {fp}" in capsys.readouterr().out
        assert cli.main(["verify", "--trust", str(tmp_path / "other.pub"), str(torrent)]) == 1
        assert "signed by unknown key" in capsys.readouterr().err

    def test_unsigned_torrent(self, setup, capsys):
        """An unsigned torrent: exit 1, one line saying so."""
        tmp_path, payload, _, _ = setup
        plain = tmp_path / "plain.torrent"
        _make(capsys, payload, plain)
        assert cli.main(["verify", "--trust", str(tmp_path / "k.pub"), str(plain)]) == 1
        captured = capsys.readouterr()
        assert captured.out == ""
        assert captured.err == \
            "murder verify: untrusted torrent: not signed (no 'murder-signature' key)\n"

    def test_other_key(self, setup, capsys):
        """Trusting only another key: exit 1 naming the unknown signer."""
        tmp_path, _, torrent, fp = setup
        _keygen(capsys, tmp_path / "other")
        assert cli.main(["verify", "--trust", str(tmp_path / "other.pub"), str(torrent)]) == 1
        assert capsys.readouterr().err == (
            f"murder verify: untrusted torrent: signed by unknown key {fp} "
            f"(not among 1 trusted key)\n")

    def test_swapped_tracker_in_file(self, setup, capsys):
        """Editing the announce URL in the .torrent file is detected."""
        tmp_path, _, torrent, fp = setup
        raw = bencodepy.decode(torrent.read_bytes())
        raw[b"announce"] = b"http://10.0.0.66:8998/announce"
        torrent.write_bytes(bencodepy.encode(raw))
        assert cli.main(["verify", "--trust", str(tmp_path / "k.pub"), str(torrent)]) == 1
        assert capsys.readouterr().err.startswith(
            f"murder verify: untrusted torrent: bad signature from key {fp}: ")

    def test_no_trusted_keys_is_a_usage_error(self, setup, capsys):
        """Neither --trust nor MURDER_TRUST: exit 2 explaining how to give keys."""
        _, _, torrent, _ = setup
        assert cli.main(["verify", str(torrent)]) == 2
        assert "no trusted keys: pass --trust PUBKEY or set MURDER_TRUST" in \
            capsys.readouterr().err

    @pytest.mark.parametrize("case", ["missing torrent", "missing key", "no torrent arg"])
    def test_bad_arguments(self, setup, capsys, case):
        """Missing files fail with exit 1 and the path; a missing argument exits 2."""
        tmp_path, _, torrent, _ = setup
        args = {
            "missing torrent": (["--trust", str(tmp_path / "k.pub"),
                                 str(tmp_path / "nope.torrent")], 1, "nope.torrent"),
            "missing key": (["--trust", str(tmp_path / "nope.pub"), str(torrent)], 1,
                            "cannot use key file"),
            "no torrent arg": (["--trust", str(tmp_path / "k.pub")], 2, "murder verify:"),
        }[case]
        assert cli.main(["verify", *args[0]]) == args[1]
        assert args[2] in capsys.readouterr().err


class MakeTorrentSignTests:
    """``make-torrent --sign`` refuses bad keys without writing a torrent."""

    @pytest.mark.parametrize("which", ["missing", "public"])
    def test_bad_signing_key(self, tmp_path, tmp_payload, capsys, which):
        """A missing key or a public key as --sign: exit 1, no torrent file."""
        _keygen(capsys, tmp_path / "k")
        key = {"missing": tmp_path / "absent", "public": tmp_path / "k.pub"}[which]
        out = tmp_path / "t.torrent"
        payload = tmp_payload(b"p" * 1000)
        assert cli.main(["make-torrent", "--announce", ANNOUNCE, "-q", "-o", str(out),
                         "--sign", str(key), str(payload)]) == 1
        assert capsys.readouterr().err.startswith(f"murder make-torrent: cannot use key file {key}: ")
        assert not out.exists()
