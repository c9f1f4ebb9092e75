"""Signed torrents: key files, signing, verification and every refusal (murder.trust)."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import bencodepy
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from murder import metainfo, trust
from murder.errors import TrustError

ANNOUNCE = "http://127.0.0.1:8998/announce"


def _mode(path: str | Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _torrent(tmp_payload, spec=b"x" * 300_000, **kwargs) -> dict:
    """A raw torrent dict for a fresh payload (fixed creation date: deterministic)."""
    path = tmp_payload(spec)
    return metainfo.create(str(path), ANNOUNCE, creation_date=0, **kwargs)


def _meta(torrent: dict) -> metainfo.Metainfo:
    """What a peer sees: the torrent encoded to bytes and parsed back."""
    return metainfo.parse(bencodepy.encode(torrent))


def _raw_public(key: Ed25519PrivateKey) -> bytes:
    return trust.public_bytes(key.public_key())


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


class KeyGenerationTests:
    """``generate_key_pair`` writes a usable pair with safe permissions."""

    def test_pair_is_written_with_modes_and_loads_back(self, tmp_path):
        """The private key is 0600 PEM PKCS8, the public key PEM; both load and match."""
        prefix = str(tmp_path / "deploy")
        pair = trust.generate_key_pair(prefix)
        assert (pair.private_path, pair.public_path) == (prefix, prefix + ".pub")
        assert _mode(prefix) == 0o600
        assert Path(prefix).read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
        assert Path(prefix + ".pub").read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
        private = trust.load_private_key(prefix)
        public = trust.load_public_key(prefix + ".pub")
        assert _raw_public(private) == trust.public_bytes(public)
        expected = hashlib.sha256(trust.public_bytes(public)).hexdigest()[:16]
        assert pair.fingerprint == expected

    def test_private_key_mode_is_set_at_creation_not_by_umask(self, tmp_path):
        """Even with umask 0 the private key is created 0600 (never world-readable)."""
        old = os.umask(0)
        try:
            trust.generate_key_pair(str(tmp_path / "k"))
        finally:
            os.umask(old)
        assert _mode(tmp_path / "k") == 0o600
        assert _mode(tmp_path / "k.pub") == 0o644

    def test_two_keys_differ(self, tmp_path):
        """Each call makes a fresh key (different fingerprints)."""
        a = trust.generate_key_pair(str(tmp_path / "a"))
        b = trust.generate_key_pair(str(tmp_path / "b"))
        assert a.fingerprint != b.fingerprint

    @pytest.mark.parametrize("existing", ["k", "k.pub"])
    def test_refuses_to_overwrite(self, tmp_path, existing):
        """An existing private or public file is left alone and nothing else is written."""
        (tmp_path / existing).write_bytes(b"precious")
        with pytest.raises(trust.KeyFileError, match="already exists .use --force"):
            trust.generate_key_pair(str(tmp_path / "k"))
        assert (tmp_path / existing).read_bytes() == b"precious"
        assert sorted(p.name for p in tmp_path.iterdir()) == [existing]

    def test_force_replaces_and_keeps_0600(self, tmp_path):
        """--force replaces both files; a loose mode on the old file is not inherited."""
        first = trust.generate_key_pair(str(tmp_path / "k"))
        os.chmod(tmp_path / "k", 0o644)
        second = trust.generate_key_pair(str(tmp_path / "k"), force=True)
        assert second.fingerprint != first.fingerprint
        assert _mode(tmp_path / "k") == 0o600
        assert trust.fingerprint(trust.load_public_key(str(tmp_path / "k.pub"))) == \
            second.fingerprint
        assert sorted(p.name for p in tmp_path.iterdir()) == ["k", "k.pub"]

    def test_missing_directory_is_a_key_file_error(self, tmp_path):
        """A prefix in a directory that does not exist fails with the OS reason."""
        with pytest.raises(trust.KeyFileError, match="No such file or directory"):
            trust.generate_key_pair(str(tmp_path / "nope" / "k"))


class KeyLoadingTests:
    """Key files in the formats users have are loaded; anything else is refused clearly."""

    def test_public_key_formats(self, tmp_path, key):
        """PEM SubjectPublicKeyInfo, an OpenSSH line, DER and 32 raw bytes all load."""
        pub = key.public_key()
        files = {
            "pem.pub": pub.public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo),
            "ssh.pub": pub.public_bytes(serialization.Encoding.OpenSSH,
                                        serialization.PublicFormat.OpenSSH) + b" ops@host\n",
            "der.pub": pub.public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo),
            "raw.pub": _raw_public(key),
        }
        for name, data in files.items():
            (tmp_path / name).write_bytes(data)
            assert trust.public_bytes(trust.load_public_key(str(tmp_path / name))) == \
                _raw_public(key), name

    def test_private_key_formats(self, tmp_path, key):
        """PEM PKCS8, OpenSSH and 32 raw bytes private keys all load."""
        files = {
            "pem": key.private_bytes(serialization.Encoding.PEM,
                                     serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()),
            "ssh": key.private_bytes(serialization.Encoding.PEM,
                                     serialization.PrivateFormat.OpenSSH,
                                     serialization.NoEncryption()),
            "raw": key.private_bytes(serialization.Encoding.Raw,
                                     serialization.PrivateFormat.Raw,
                                     serialization.NoEncryption()),
        }
        for name, data in files.items():
            (tmp_path / name).write_bytes(data)
            assert _raw_public(trust.load_private_key(str(tmp_path / name))) == \
                _raw_public(key), name

    def test_encrypted_private_key_is_refused(self, tmp_path, key):
        """A passphrase-protected key is refused (deploys run unattended)."""
        (tmp_path / "k").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret")))
        with pytest.raises(trust.KeyFileError, match="is encrypted"):
            trust.load_private_key(str(tmp_path / "k"))

    def test_non_ed25519_keys_are_refused(self, tmp_path):
        """An EC key is named as such, for signing and for trusting."""
        other = ec.generate_private_key(ec.SECP256R1())
        (tmp_path / "ec").write_bytes(other.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
        (tmp_path / "ec.pub").write_bytes(other.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        with pytest.raises(trust.KeyFileError, match="key type EC secp256r1 is not Ed25519"):
            trust.load_private_key(str(tmp_path / "ec"))
        with pytest.raises(trust.KeyFileError, match="key type EC secp256r1 is not Ed25519"):
            trust.load_public_key(str(tmp_path / "ec.pub"))

    def test_swapped_key_files_are_named(self, tmp_path):
        """Trusting a private key, or signing with a public key, says which file to use."""
        trust.generate_key_pair(str(tmp_path / "k"))
        with pytest.raises(trust.KeyFileError, match="is a private key; trust the .pub"):
            trust.load_public_keys([str(tmp_path / "k")])
        with pytest.raises(trust.KeyFileError, match="is a public key; --sign needs"):
            trust.load_private_key(str(tmp_path / "k.pub"))

    @pytest.mark.parametrize("content,reason", [
        (None, "No such file or directory"),
        (b"", "file is empty"),
        (b"hello, not a key\n", "not a public key"),
        (b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", "not a public key"),
        (b"ssh-ed25519 AAAAnotbase64!!\n", "not a public key"),
    ])
    def test_bad_public_key_files(self, tmp_path, content, reason):
        """Unreadable and invalid files raise a TrustError naming the file and the reason."""
        path = tmp_path / "bad.pub"
        if content is not None:
            path.write_bytes(content)
        with pytest.raises(TrustError) as info:
            trust.load_public_keys([str(path)])
        assert str(info.value).startswith(f"cannot use key file {path}: ")
        assert reason in str(info.value)

    def test_directory_of_public_keys(self, tmp_path):
        """A directory contributes every *.pub file, ignores the rest, and drops duplicates."""
        keys = tmp_path / "trusted"
        keys.mkdir()
        a = trust.generate_key_pair(str(keys / "a"))
        b = trust.generate_key_pair(str(tmp_path / "b"))
        shutil.copy(tmp_path / "b.pub", keys / "b.pub")
        (keys / "README").write_text("not a key")
        loaded = trust.load_public_keys([str(keys), str(tmp_path / "b.pub")])
        assert sorted(trust.fingerprint(k) for k in loaded) == \
            sorted([a.fingerprint, b.fingerprint])

    def test_directory_without_public_keys_is_refused(self, tmp_path):
        """An empty trust directory is an error, not an empty (permissive) trust set."""
        (tmp_path / "empty").mkdir()
        with pytest.raises(trust.KeyFileError, match=r"holds no \*\.pub key files"):
            trust.load_public_keys([str(tmp_path / "empty")])


class TrustedKeysFromTests:
    """``trusted_keys_from``: --trust values first, else $MURDER_TRUST, failing closed."""

    def _pair(self, tmp_path, name):
        return trust.generate_key_pair(str(tmp_path / name))

    def test_option_wins_over_environment(self, tmp_path):
        """When --trust is given the variable is ignored."""
        a, b = self._pair(tmp_path, "a"), self._pair(tmp_path, "b")
        keys = trust.trusted_keys_from([a.public_path], {trust.TRUST_ENV: b.public_path})
        assert [trust.fingerprint(k) for k in keys] == [a.fingerprint]

    def test_environment_is_a_pathsep_list(self, tmp_path):
        """MURDER_TRUST lists paths separated by os.pathsep; empty entries are skipped."""
        a, b = self._pair(tmp_path, "a"), self._pair(tmp_path, "b")
        value = os.pathsep.join(["", a.public_path, "", b.public_path])
        keys = trust.trusted_keys_from(None, {trust.TRUST_ENV: value})
        assert [trust.fingerprint(k) for k in keys] == [a.fingerprint, b.fingerprint]

    def test_nothing_configured_is_empty(self):
        """No option and no variable: no policy (empty list)."""
        assert trust.trusted_keys_from(None, {}) == []
        assert trust.trusted_keys_from([], {trust.TRUST_ENV: ""}) == []

    def test_bad_environment_path_fails_closed(self, tmp_path):
        """A configured but missing key path is an error, not a silently empty policy."""
        with pytest.raises(trust.KeyFileError, match="No such file"):
            trust.trusted_keys_from(None, {trust.TRUST_ENV: str(tmp_path / "gone.pub")})

    def test_enforce(self, tmp_path, tmp_payload, key):
        """``enforce`` skips without a policy and verifies (or refuses) with one."""
        signed = _meta(trust.sign_torrent(_torrent(tmp_payload), key))
        (tmp_path / "k.pub").write_bytes(_raw_public(key))
        other = self._pair(tmp_path, "other")
        assert trust.enforce(signed, None, {}) is None
        assert trust.enforce(signed, None, {trust.TRUST_ENV: str(tmp_path / "k.pub")}) == \
            trust.fingerprint(_raw_public(key))
        with pytest.raises(TrustError, match="unknown key"):
            trust.enforce(signed, [other.public_path], {})


class SignVerifyTests:
    """A signed torrent verifies, keeps its info hash, and carries a well-formed signature."""

    def test_round_trip(self, tmp_payload, key):
        """Signing then verifying returns the signer's fingerprint."""
        signed = trust.sign_torrent(_torrent(tmp_payload), key)
        assert trust.verify_metainfo(_meta(signed), [key.public_key()]) == \
            hashlib.sha256(_raw_public(key)).hexdigest()[:16]

    def test_info_and_info_hash_unchanged(self, tmp_payload, key):
        """The signature is outside ``info``; the input dict is not modified."""
        torrent = _torrent(tmp_payload)
        before = bencodepy.encode(torrent)
        signed = trust.sign_torrent(torrent, key)
        assert bencodepy.encode(torrent) == before
        assert signed[b"info"] == torrent[b"info"]
        assert _meta(signed).info_hash == _meta(torrent).info_hash
        assert set(signed) - set(torrent) == {trust.SIGNATURE_KEY}

    def test_signature_dict_shape(self, tmp_payload, key):
        """alg is ed25519, key the raw 32-byte public key, sig 64 bytes."""
        sig = trust.sign_torrent(_torrent(tmp_payload), key)[trust.SIGNATURE_KEY]
        assert sig[b"alg"] == b"ed25519"
        assert sig[b"key"] == _raw_public(key)
        assert len(sig[b"sig"]) == 64

    def test_signature_covers_domain_info_hash_and_announce(self, tmp_payload, key):
        """The signature verifies over exactly DOMAIN + info hash + bencoded announce data."""
        torrent = _torrent(tmp_payload, announce_list=[[ANNOUNCE], ["http://b/announce"]])
        signed = trust.sign_torrent(torrent, key)
        message = (b"murder torrent signature v1\x00" + metainfo.info_hash(torrent[b"info"])
                   + bencodepy.encode({b"announce": torrent[b"announce"],
                                       b"announce-list": torrent[b"announce-list"]}))
        key.public_key().verify(signed[trust.SIGNATURE_KEY][b"sig"], message)

    def test_resigning_replaces_signature(self, tmp_payload, key):
        """Signing a signed torrent with another key leaves only the new signature."""
        other = Ed25519PrivateKey.generate()
        twice = trust.sign_torrent(trust.sign_torrent(_torrent(tmp_payload), key), other)
        assert twice[trust.SIGNATURE_KEY][b"key"] == _raw_public(other)
        assert trust.verify_metainfo(_meta(twice), [other.public_key()])

    def test_multi_file_torrent(self, tmp_payload, key):
        """A directory payload signs and verifies the same way."""
        torrent = _torrent(tmp_payload, {"bin/app": b"a" * 70_000, "etc/conf": b"c" * 9})
        signed = _meta(trust.sign_torrent(torrent, key))
        assert signed.multi_file
        assert trust.verify_metainfo(signed, [Ed25519PrivateKey.generate().public_key(),
                                              key.public_key()])

    def test_unsigned_metadata_may_change(self, tmp_payload, key):
        """comment/created by/creation date are not signed: changing them still verifies."""
        signed = trust.sign_torrent(_torrent(tmp_payload), key)
        signed[b"comment"] = b"added later"
        signed[b"creation date"] = 12345
        assert trust.verify_metainfo(_meta(signed), [key.public_key()])

    def test_sign_needs_an_ed25519_private_key(self, tmp_payload, key):
        """Passing a public key (a programming error) raises TypeError."""
        with pytest.raises(TypeError, match="Ed25519PrivateKey"):
            trust.sign_torrent(_torrent(tmp_payload), key.public_key())


class TamperingTests:
    """Every way a torrent can be unsigned, foreign or altered is refused with its reason."""

    @pytest.fixture
    def signed(self, tmp_payload, key) -> dict:
        return trust.sign_torrent(_torrent(tmp_payload), key)

    def _refused(self, torrent: dict, keys) -> str:
        with pytest.raises(TrustError) as info:
            trust.verify_metainfo(_meta(torrent), keys)
        return str(info.value)

    def _bad_signature(self, key) -> str:
        return (f"untrusted torrent: bad signature from key "
                f"{trust.fingerprint(_raw_public(key))}: the torrent's info or trackers "
                f"were changed after signing, or the signature was altered")

    def test_changed_info(self, signed, key):
        """A changed piece hash gives another info hash, and the signature fails."""
        before = _meta(signed).info_hash
        pieces = bytearray(signed[b"info"][b"pieces"])
        pieces[0] ^= 1
        signed[b"info"][b"pieces"] = bytes(pieces)
        assert _meta(signed).info_hash != before
        assert self._refused(signed, [key.public_key()]) == self._bad_signature(key)

    def test_renamed_payload(self, signed, key):
        """Renaming the payload (info.name) breaks the signature."""
        signed[b"info"][b"name"] = b"evil"
        assert self._refused(signed, [key.public_key()]) == self._bad_signature(key)

    def test_changed_announce(self, signed, key):
        """Pointing the torrent at another tracker breaks the signature."""
        signed[b"announce"] = b"http://attacker.example:8998/announce"
        assert self._refused(signed, [key.public_key()]) == self._bad_signature(key)

    def test_added_announce_list(self, signed, key):
        """Adding backup trackers (announce-list) breaks the signature."""
        signed[b"announce-list"] = [[ANNOUNCE.encode()], [b"http://attacker/announce"]]
        assert self._refused(signed, [key.public_key()]) == self._bad_signature(key)

    def test_changed_announce_list(self, tmp_payload, key):
        """Changing one tier of a signed announce-list breaks the signature."""
        signed = trust.sign_torrent(
            _torrent(tmp_payload, announce_list=[[ANNOUNCE], ["http://b/announce"]]), key)
        signed[b"announce-list"][1] = [b"http://c/announce"]
        assert self._refused(signed, [key.public_key()]) == self._bad_signature(key)

    def test_removed_announce(self, signed, key):
        """Dropping the announce URL (so clients fall back elsewhere) breaks the signature."""
        del signed[b"announce"]
        assert self._refused(signed, [key.public_key()]) == self._bad_signature(key)

    @pytest.mark.parametrize("index", [0, 31, 63])
    def test_changed_signature(self, signed, key, index):
        """Any flipped bit of the signature is refused."""
        sig = bytearray(signed[trust.SIGNATURE_KEY][b"sig"])
        sig[index] ^= 0x80
        signed[trust.SIGNATURE_KEY][b"sig"] = bytes(sig)
        assert self._refused(signed, [key.public_key()]) == self._bad_signature(key)

    def test_key_swapped_for_trusted_one(self, signed, key):
        """Claiming a trusted key for a signature made by another key fails verification."""
        trusted = Ed25519PrivateKey.generate()
        signed[trust.SIGNATURE_KEY][b"key"] = _raw_public(trusted)
        assert self._refused(signed, [trusted.public_key()]) == self._bad_signature(trusted)

    def test_other_key(self, signed, key):
        """A valid signature by a key that is not trusted is refused as unknown."""
        trusted = [Ed25519PrivateKey.generate().public_key()]
        assert self._refused(signed, trusted) == (
            f"untrusted torrent: signed by unknown key {trust.fingerprint(_raw_public(key))} "
            f"(not among 1 trusted key)")

    def test_missing_signature(self, tmp_payload, key):
        """An unsigned torrent is refused as such."""
        assert self._refused(_torrent(tmp_payload), [key.public_key()]) == \
            "untrusted torrent: not signed (no 'murder-signature' key)"

    def test_no_trusted_keys(self, signed):
        """Verifying against an empty trust set is refused, never a pass."""
        assert self._refused(signed, []) == (
            "untrusted torrent: no trusted keys configured "
            "(use --trust PUBKEY or MURDER_TRUST)")

    @pytest.mark.parametrize("mutate,message", [
        (lambda s: [s], "'murder-signature' must be a dict, not list"),
        (lambda s: b"signature", "'murder-signature' must be a dict, not bytes"),
        (lambda s: 7, "'murder-signature' must be a dict, not int"),
        (lambda s: {**s, b"alg": 1}, "'alg' must be a byte string, not int"),
        (lambda s: {k: v for k, v in s.items() if k != b"alg"},
         "'alg' must be a byte string, not missing"),
        (lambda s: {**s, b"key": [s[b"key"]]}, "'key' must be a byte string, not list"),
        (lambda s: {**s, b"key": s[b"key"][:31]}, "'key' must be 32 bytes, not 31"),
        (lambda s: {k: v for k, v in s.items() if k != b"sig"},
         "'sig' must be a byte string, not missing"),
        (lambda s: {**s, b"sig": {b"x": 1}}, "'sig' must be a byte string, not dict"),
        (lambda s: {**s, b"sig": s[b"sig"] + b"\0"}, "'sig' must be 64 bytes, not 65"),
    ])
    def test_malformed_signature(self, signed, key, mutate, message):
        """Each wrongly typed or sized field is named."""
        signed[trust.SIGNATURE_KEY] = mutate(signed[trust.SIGNATURE_KEY])
        assert self._refused(signed, [key.public_key()]) == \
            f"untrusted torrent: malformed signature: {message}"

    def test_unsupported_algorithm(self, signed, key):
        """A signature claiming another algorithm is refused (no algorithm agility)."""
        signed[trust.SIGNATURE_KEY][b"alg"] = b"rsa-sha256"
        assert self._refused(signed, [key.public_key()]) == \
            "untrusted torrent: unsupported signature algorithm 'rsa-sha256' (only ed25519)"


@pytest.mark.interop
class StandardClientTests:
    """Standard clients load a signed torrent and compute the same info hash."""

    @pytest.fixture
    def signed_file(self, tmp_path, tmp_payload, key) -> tuple[Path, str]:
        torrent = trust.sign_torrent(
            _torrent(tmp_payload, {"a.bin": os.urandom(100_000), "b/c.txt": b"c" * 5}), key)
        path = tmp_path / "signed.torrent"
        path.write_bytes(_meta(torrent).encode())
        assert trust.verify_metainfo(metainfo.load(str(path)), [key.public_key()])
        return path, metainfo.info_hash(torrent[b"info"]).hex()

    def test_libtorrent_loads_signed_torrent(self, signed_file):
        """libtorrent parses the signed torrent; its v1 info hash equals ours."""
        lt = pytest.importorskip("libtorrent")
        path, expected = signed_file
        info = lt.torrent_info(str(path))
        assert str(info.info_hashes().v1) == expected
        assert info.num_files() == 2

    def test_transmission_show_loads_signed_torrent(self, signed_file):
        """transmission-show prints the same info hash for the signed torrent."""
        tool = shutil.which("transmission-show")
        if tool is None:
            pytest.skip("transmission-show is not installed")
        path, expected = signed_file
        out = subprocess.run([tool, str(path)], capture_output=True, text=True,
                             timeout=30, check=True).stdout
        found = re.search(r"Hash(?: v1)?:\s*([0-9a-f]{40})", out)
        assert found, out
        assert found.group(1) == expected
