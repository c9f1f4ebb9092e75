"""Signed torrents: Ed25519 keys, signing at make-torrent, verification before any download.

A deploy must install exactly what the release engineer published.  The
signature lives in a top-level key of the torrent, *outside* ``info``, so the
info hash is unchanged and standard clients load the torrent as before; they
simply ignore the extra key.

What is signed (``signed_message``) is a domain-separated message over

* the info hash (which covers names, lengths and every piece hash), and
* the bencoded announce data (``announce`` and ``announce-list``),

so neither a different payload nor a swapped tracker passes verification.
The torrent's ``comment``, ``created by`` and ``creation date`` are not
signed: they change nothing that lands on disk or where peers connect.

Trusted public keys come from ``--trust PATH`` (repeatable; a key file or a
directory of ``*.pub`` files) or, when no ``--trust`` is given, from the
``MURDER_TRUST`` environment variable: a list of such paths separated by
``os.pathsep`` (``:`` on Unix).  The variable lets the legacy Capistrano shim
and the peers enforce signatures without changing any recipe.  A configured
path that cannot be read is an error, never silently skipped (fail closed).

All cryptography is the ``cryptography`` package's Ed25519.
"""

from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from twisted.python import usage

from murder import bencode, metainfo
from murder.errors import MurderError, TrustError

#: Top-level torrent key holding the signature dict (outside ``info``).
SIGNATURE_KEY = b"murder-signature"
#: The only algorithm we sign with or accept.
ALGORITHM = b"ed25519"
#: Prefix of every signed message, so a murder signature can never be
#: replayed as a signature over anything else made with the same key.
DOMAIN = b"murder torrent signature v1\x00"
#: Environment variable: default trusted keys when ``--trust`` is not given.
TRUST_ENV = "MURDER_TRUST"
DEFAULT_KEY_PREFIX = "murder-signing-key"
PUBLIC_SUFFIX = ".pub"

_RAW_KEY_LENGTH = 32
_SIGNATURE_LENGTH = 64
#: Key files are a few hundred bytes; refuse to slurp anything large.
_MAX_KEY_FILE = 64 * 1024


class KeyFileError(TrustError):
    """A key file is unreadable, malformed, encrypted or not Ed25519."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        # Skip TrustError's "untrusted torrent:" wording: the key is at fault.
        MurderError.__init__(self, f"cannot use key file {path}: {reason}")


# ------------------------------------------------------------------ key helpers


def public_bytes(key: Ed25519PublicKey) -> bytes:
    """The raw 32-byte encoding of a public key (what the torrent carries)."""
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def fingerprint(key: Ed25519PublicKey | bytes) -> str:
    """Short, stable key id: first 16 hex digits of SHA-256 of the raw public key."""
    raw = key if isinstance(key, bytes) else public_bytes(key)
    return hashlib.sha256(raw).hexdigest()[:16]


def _read_key_file(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(_MAX_KEY_FILE + 1)
    except OSError as e:
        raise KeyFileError(path, e.strerror or str(e)) from None
    if len(data) > _MAX_KEY_FILE:
        raise KeyFileError(path, f"larger than {_MAX_KEY_FILE} bytes, not a key")
    if not data.strip():
        raise KeyFileError(path, "file is empty")
    return data


def _kind(key: object) -> str:
    """A human name for a key type that is not Ed25519 (for error messages)."""
    if isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey)):
        return "RSA"
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)):
        return f"EC {key.curve.name}"
    if isinstance(key, (dsa.DSAPrivateKey, dsa.DSAPublicKey)):
        return "DSA"
    return type(key).__name__


def load_private_key(path: str) -> Ed25519PrivateKey:
    """Load an unencrypted Ed25519 private key: PEM PKCS8, OpenSSH, or 32 raw bytes."""
    data = _read_key_file(path)
    stripped = data.strip()
    try:
        if stripped.startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----"):
            key: Any = serialization.load_ssh_private_key(data, password=None)
        elif stripped.startswith(b"-----BEGIN"):
            if b"PUBLIC KEY" in stripped.split(b"\n", 1)[0]:
                raise KeyFileError(path, "is a public key; --sign needs the private key")
            key = serialization.load_pem_private_key(data, password=None)
        elif len(data) == _RAW_KEY_LENGTH:
            key = Ed25519PrivateKey.from_private_bytes(data)
        else:
            key = serialization.load_der_private_key(data, password=None)
    except TypeError:
        # cryptography raises TypeError when a password is needed.
        raise KeyFileError(path, "key is encrypted; murder needs an unencrypted key") from None
    except (ValueError, UnsupportedAlgorithm) as e:
        raise KeyFileError(path, f"not a private key ({e})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(path, f"key type {_kind(key)} is not Ed25519")
    return key


def load_public_key(path: str) -> Ed25519PublicKey:
    """Load an Ed25519 public key: PEM SubjectPublicKeyInfo, OpenSSH line, DER or 32 raw bytes."""
    data = _read_key_file(path)
    stripped = data.strip()
    try:
        if stripped.startswith(b"-----BEGIN") and b"PRIVATE KEY" in stripped.split(b"\n", 1)[0]:
            raise KeyFileError(path, "is a private key; trust the .pub file instead")
        if stripped.startswith(b"-----BEGIN"):
            key: Any = serialization.load_pem_public_key(data)
        elif stripped.startswith(b"ssh-"):
            key = serialization.load_ssh_public_key(stripped)
        elif len(data) == _RAW_KEY_LENGTH:
            key = Ed25519PublicKey.from_public_bytes(data)
        else:
            key = serialization.load_der_public_key(data)
    except (ValueError, UnsupportedAlgorithm) as e:
        raise KeyFileError(path, f"not a public key ({e})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(path, f"key type {_kind(key)} is not Ed25519")
    return key


def load_public_keys(paths: Sequence[str]) -> list[Ed25519PublicKey]:
    """Load every trusted key; each path is a key file or a directory of ``*.pub`` files.

    Duplicates are dropped.  A directory without any ``*.pub`` file is an
    error: an empty trust directory almost certainly means a broken deploy.
    """
    keys: dict[bytes, Ed25519PublicKey] = {}
    for path in paths:
        if os.path.isdir(path):
            try:
                names = sorted(n for n in os.listdir(path) if n.endswith(PUBLIC_SUFFIX))
            except OSError as e:
                raise KeyFileError(path, e.strerror or str(e)) from None
            files = [os.path.join(path, n) for n in names]
            files = [f for f in files if os.path.isfile(f)]
            if not files:
                raise KeyFileError(path, f"directory holds no *{PUBLIC_SUFFIX} key files")
        else:
            files = [path]
        for file in files:
            key = load_public_key(file)
            keys.setdefault(public_bytes(key), key)
    return list(keys.values())


def trusted_keys_from(options_value: Sequence[str] | None,
                      environ: Mapping[str, str] = os.environ) -> list[Ed25519PublicKey]:
    """The trusted keys a command should enforce: ``--trust`` values, else ``$MURDER_TRUST``.

    An empty list means no trust policy is configured (nothing to enforce).
    Empty entries in the variable (``a::b``) are ignored; unreadable paths
    raise :class:`KeyFileError`.
    """
    if options_value:
        return load_public_keys(list(options_value))
    paths = [p for p in environ.get(TRUST_ENV, "").split(os.pathsep) if p]
    return load_public_keys(paths)


def enforce(meta: metainfo.Metainfo, options_value: Sequence[str] | None,
            environ: Mapping[str, str] = os.environ) -> str | None:
    """For peers and seeders: verify ``meta`` if a trust policy is configured.

    Returns the signer's fingerprint, or ``None`` when neither ``--trust``
    nor ``MURDER_TRUST`` is set.  Call it before any network activity.
    """
    keys = trusted_keys_from(options_value, environ)
    if not keys:
        return None
    return verify_metainfo(meta, keys)


# -------------------------------------------------------------- sign / verify


def _announce_data(top: Mapping[bytes, Any]) -> bytes:
    """Bencoded ``announce`` and ``announce-list`` exactly as present in the torrent."""
    return bencode.encode({k: top[k] for k in (b"announce", b"announce-list") if k in top})


def signed_message(info_hash: bytes, top: Mapping[bytes, Any]) -> bytes:
    """The bytes the signature covers: domain, info hash, bencoded announce data.

    The info hash has a fixed length and bencoding is self-delimiting, so
    the concatenation is unambiguous.
    """
    return DOMAIN + info_hash + _announce_data(top)


def sign_torrent(torrent: dict, key: Ed25519PrivateKey) -> dict:
    """Return a copy of ``torrent`` with a signature under ``SIGNATURE_KEY``.

    ``info`` is untouched, so the info hash stays the same.  Signing again
    replaces any previous signature.
    """
    if not isinstance(key, Ed25519PrivateKey):
        raise TypeError(f"sign_torrent needs an Ed25519PrivateKey, not {type(key).__name__}")
    info = torrent.get(b"info")
    if not isinstance(info, dict):
        raise TrustError("cannot sign a torrent without an 'info' dict")
    signed = {k: v for k, v in torrent.items() if k != SIGNATURE_KEY}
    signature = key.sign(signed_message(metainfo.info_hash(info), signed))
    signed[SIGNATURE_KEY] = {
        b"alg": ALGORITHM,
        b"key": public_bytes(key.public_key()),
        b"sig": signature,
    }
    return signed


def _field(sig: dict, name: bytes, length: int | None) -> bytes:
    value = sig.get(name)
    if not isinstance(value, bytes):
        kind = "missing" if value is None else type(value).__name__
        raise TrustError(f"malformed signature: '{name.decode()}' must be a byte string, "
                         f"not {kind}")
    if length is not None and len(value) != length:
        raise TrustError(f"malformed signature: '{name.decode()}' must be {length} bytes, "
                         f"not {len(value)}")
    return value


def verify_metainfo(meta: metainfo.Metainfo,
                    trusted_keys: Sequence[Ed25519PublicKey]) -> str:
    """Check ``meta``'s signature against ``trusted_keys``; return the signer's fingerprint.

    Raises :class:`TrustError` saying precisely why the torrent is refused:
    no trusted keys, unsigned, malformed signature, unknown key, or a
    signature that does not match (info, trackers or signature changed).
    """
    if not trusted_keys:
        raise TrustError(f"no trusted keys configured (use --trust PUBKEY or {TRUST_ENV})")
    sig = meta.raw.get(SIGNATURE_KEY)
    if sig is None:
        raise TrustError(f"not signed (no '{SIGNATURE_KEY.decode()}' key)")
    if not isinstance(sig, dict):
        raise TrustError(f"malformed signature: '{SIGNATURE_KEY.decode()}' must be a dict, "
                         f"not {type(sig).__name__}")
    alg = _field(sig, b"alg", None)
    if alg != ALGORITHM:
        raise TrustError(f"unsupported signature algorithm {alg.decode('utf-8', 'replace')!r}"
                         f" (only {ALGORITHM.decode()})")
    raw_key = _field(sig, b"key", _RAW_KEY_LENGTH)
    signature = _field(sig, b"sig", _SIGNATURE_LENGTH)
    signer_id = fingerprint(raw_key)
    signer = next((k for k in trusted_keys if public_bytes(k) == raw_key), None)
    if signer is None:
        raise TrustError(f"signed by unknown key {signer_id} (not among "
                         f"{len(trusted_keys)} trusted key{'s' if len(trusted_keys) != 1 else ''})")
    try:
        signer.verify(signature, signed_message(meta.info_hash, meta.raw))
    except InvalidSignature:
        raise TrustError(f"bad signature from key {signer_id}: the torrent's info or "
                         f"trackers were changed after signing, or the signature was "
                         f"altered") from None
    return signer_id


# ------------------------------------------------------- announce authorisation


def authorise_announce(torrent: dict, secret: bytes) -> dict:
    """Return a copy of ``torrent`` whose tracker URLs carry the swarm's auth token.

    ``announce`` and every ``announce-list`` URL get ``auth=<token>`` (see
    :mod:`murder.auth`), so a tracker started with the same
    ``--auth-secret`` accepts the torrent's announces and scrapes.  ``info``
    is untouched (same info hash).  Sign *after* this: the signature covers
    the announce URLs, token included.
    """
    from murder.auth import token, url_with_token

    info = torrent.get(b"info")
    if not isinstance(info, dict):
        raise TrustError("cannot authorise a torrent without an 'info' dict")
    value = token(secret, metainfo.info_hash(info))

    def rewrite(url: bytes) -> bytes:
        return url_with_token(url.decode("utf-8"), value).encode("utf-8")

    out = dict(torrent)
    if isinstance(out.get(b"announce"), bytes):
        out[b"announce"] = rewrite(out[b"announce"])
    if isinstance(out.get(b"announce-list"), list):
        out[b"announce-list"] = [[rewrite(u) for u in tier]
                                 for tier in out[b"announce-list"]]
    return out


# ------------------------------------------------------------------- key files


def _write_new(path: str, data: bytes, mode: int) -> None:
    """Create ``path`` with ``mode`` from the first byte on; fail if it exists."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0),
                 mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_replacing(path: str, data: bytes, mode: int) -> None:
    """Write via an exclusive temp file + rename: never world-readable, never half-written."""
    tmp = os.path.join(os.path.dirname(os.path.abspath(path)),
                       f".{os.path.basename(path)}.tmp-{os.getpid()}")
    try:
        _write_new(tmp, data, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


@dataclass(frozen=True)
class KeyPair:
    """Where ``generate_key_pair`` wrote the keys, and the key's fingerprint."""

    private_path: str
    public_path: str
    fingerprint: str


def generate_key_pair(prefix: str, force: bool = False) -> KeyPair:
    """Write a new Ed25519 key pair to ``prefix`` (0600) and ``prefix.pub``.

    Without ``force`` an existing file at either path is an error and
    nothing is written.
    """
    private_path, public_path = prefix, prefix + PUBLIC_SUFFIX
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    try:
        if force:
            _write_replacing(private_path, private_pem, 0o600)
            _write_replacing(public_path, public_pem, 0o644)
        else:
            for path in (private_path, public_path):
                if os.path.lexists(path):
                    raise KeyFileError(path, "already exists (use --force to overwrite)")
            _write_new(private_path, private_pem, 0o600)
            try:
                _write_new(public_path, public_pem, 0o644)
            except BaseException:
                os.unlink(private_path)
                raise
    except FileExistsError as e:
        raise KeyFileError(e.filename or prefix,
                           "already exists (use --force to overwrite)") from None
    except OSError as e:
        raise KeyFileError(e.filename or prefix, e.strerror or str(e)) from None
    return KeyPair(private_path, public_path, fingerprint(key.public_key()))


# ------------------------------------------------------------------ commands


class KeygenOptions(usage.Options):
    """``murder keygen [--out PREFIX] [--force]``."""

    synopsis = "murder keygen [--out PREFIX] [--force]"
    longdesc = ("Create an Ed25519 key pair for `murder make-torrent --sign`: PREFIX "
                "(private key, PEM PKCS8, mode 0600) and PREFIX.pub (public key, PEM) "
                "to hand to peers with --trust or MURDER_TRUST.")
    optParameters = [
        ["out", "o", DEFAULT_KEY_PREFIX, "Path of the private key; the public key gets .pub."],
    ]
    optFlags = [
        ["force", "f", "Overwrite existing key files."],
    ]

    def postOptions(self) -> None:  # noqa: N802 (Twisted API)
        if not self["out"]:
            raise usage.UsageError("--out PREFIX must not be empty")


@dataclass(frozen=True)
class KeygenConfig:
    """Validated ``murder keygen`` settings."""

    prefix: str
    force: bool

    @classmethod
    def from_options(cls, options: KeygenOptions) -> KeygenConfig:
        return cls(prefix=options["out"], force=bool(options["force"]))


class VerifyOptions(usage.Options):
    """``murder verify [--trust PUBKEY ...] TORRENT``."""

    synopsis = "murder verify [--trust PUBKEY ...] TORRENT"
    longdesc = (f"Check that TORRENT is signed by a trusted key. Without --trust the "
                f"keys listed in ${TRUST_ENV} ({os.pathsep}-separated paths) are used. "
                f"Exit 0 if it verifies, 1 with the reason if it does not, 2 if no "
                f"trusted key is configured.")

    def __init__(self) -> None:
        super().__init__()
        self["trust"] = []

    def opt_trust(self, path: str) -> None:
        """Trusted public key file, or directory of *.pub files (repeatable)."""
        self["trust"].append(path)

    opt_t = opt_trust

    def parseArgs(self, torrent: str) -> None:  # type: ignore[override]  # noqa: N802
        self["torrent"] = torrent


@dataclass(frozen=True)
class VerifyConfig:
    """Validated ``murder verify`` settings; ``trust`` is None when --trust was not given."""

    torrent: str
    trust: tuple[str, ...] | None

    @classmethod
    def from_options(cls, options: VerifyOptions) -> VerifyConfig:
        return cls(torrent=options["torrent"], trust=tuple(options["trust"]) or None)


def keygen(config: KeygenConfig, out=None) -> int:
    """Run ``murder keygen``; prints the key paths and fingerprint."""
    out = out or sys.stdout
    pair = generate_key_pair(config.prefix, force=config.force)
    print(f"private key: {pair.private_path} (mode 0600, keep it secret)", file=out)
    print(f"public key:  {pair.public_path}", file=out)
    print(f"fingerprint: {pair.fingerprint}", file=out)
    return 0


def verify(config: VerifyConfig, environ: Mapping[str, str] = os.environ, out=None) -> int:
    """Run ``murder verify``; prints one line and returns 0, or raises the reason."""
    out = out or sys.stdout
    keys = trusted_keys_from(config.trust, environ)
    if not keys:
        raise usage.UsageError(f"no trusted keys: pass --trust PUBKEY or set {TRUST_ENV}")
    meta = metainfo.load(config.torrent)
    signer = verify_metainfo(meta, keys)
    print(f"{config.torrent}: signed by {signer}, info hash {meta.info_hash.hex()}", file=out)
    return 0


def main(command: str, argv: list[str]) -> int:
    """Entry point used by :mod:`murder.cli` for ``keygen`` and ``verify``."""
    if command == "keygen":
        options = KeygenOptions()
        options.parseOptions(argv)
        return keygen(KeygenConfig.from_options(options))
    if command == "verify":
        verify_options = VerifyOptions()
        verify_options.parseOptions(argv)
        return verify(VerifyConfig.from_options(verify_options))
    raise usage.UsageError(f"unknown trust command {command!r}")
