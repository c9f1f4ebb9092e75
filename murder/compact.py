"""Compact peer addresses (BEP 23, and BEP 7 for IPv6): the one format both sides share.

The tracker encodes each peer once (:func:`encode`) and concatenates the
results into ``peers``/``peers6``; the peer's announce client decodes those
strings (:func:`decode`).  Pure: no I/O.
"""

from __future__ import annotations

import socket
import struct

from murder.errors import AnnounceError

#: Bytes of one entry: 4 or 16 address bytes, then a big-endian port.
V4_SIZE = 6
V6_SIZE = 18

_PORT = struct.Struct(">H")


def encode(ip: str, port: int) -> tuple[bytes, bool]:
    """``(entry, is_v6)`` for ``ip:port``; ``OSError``/``OverflowError`` if unusable."""
    if ":" in ip:
        return socket.inet_pton(socket.AF_INET6, ip) + port.to_bytes(2, "big"), True
    return socket.inet_pton(socket.AF_INET, ip) + port.to_bytes(2, "big"), False


def decode(blob: bytes, v6: bool = False) -> list[tuple[str, int]]:
    """Every ``(host, port)`` in a ``peers`` (or, with ``v6``, ``peers6``) string.

    Raises :class:`~murder.errors.AnnounceError` if ``blob`` is not a whole
    number of entries (bytes from a tracker are untrusted).
    """
    family, size = (socket.AF_INET6, V6_SIZE) if v6 else (socket.AF_INET, V4_SIZE)
    if len(blob) % size:
        raise AnnounceError(f"compact peers of {len(blob)} bytes")
    out = []
    for i in range(0, len(blob), size):
        host = socket.inet_ntop(family, blob[i:i + size - 2])
        (port,) = _PORT.unpack_from(blob, i + size - 2)
        out.append((host, port))
    return out


__all__ = ["V4_SIZE", "V6_SIZE", "decode", "encode"]
