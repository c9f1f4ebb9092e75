"""Strict bencode decoding for untrusted bytes (torrents, tracker replies, dfiles).

bencode.py does the work; this module closes one hole in it: a string length
with a sign (``-6:``) moves its read position backwards, so 11 bytes such as
``d1:a1:b-6:e`` make ``bencodepy.decode`` loop forever.  Every decode of
untrusted bytes in Murder goes through :func:`decode`.
"""

from __future__ import annotations

from typing import Any, Callable

import bencodepy
from bencodepy.decoder import BencodeDecoder

DecodeError = bencodepy.BencodeDecodeError
#: Encoding is safe as bencode.py does it (our own values, canonical key order).
encode: Callable[[Any], bytes] = bencodepy.encode


class _StrictDecoder(BencodeDecoder):
    def decode_string(self, x: bytes, f: int, kind: str = "value",  # type: ignore[override]
                      **kwargs: Any) -> Any:
        if x[f:f + 1] not in b"0123456789" or not x[f:f + 1]:
            raise ValueError("string length must be a non-negative integer")
        return super().decode_string(x, f, kind, **kwargs)


_DECODER = _StrictDecoder()


def decode(data: bytes) -> Any:
    """Decode ``data``; raise :data:`DecodeError` on anything but one whole value."""
    return _DECODER.decode(data)


def _skip(data: bytes, pos: int) -> int:
    """Index just past the value starting at ``pos`` (``data`` already decoded fine)."""
    c = data[pos:pos + 1]
    if c == b"i":
        return data.index(b"e", pos) + 1
    if c in (b"l", b"d"):
        pos += 1
        while data[pos:pos + 1] != b"e":
            pos = _skip(data, pos)
        return pos + 1
    colon = data.index(b":", pos)
    return colon + 1 + int(data[pos:colon])


def raw_value(data: bytes, key: bytes) -> bytes | None:
    """The exact bytes of ``key``'s value in a top-level bencoded dict.

    Torrent identity is the SHA-1 of the info dict *as found in the file*, so
    callers compare these bytes with a re-encoding.  With duplicate keys the
    last occurrence is returned, as the decoder keeps the last value.
    """
    found = None
    pos = 1
    while data[pos:pos + 1] != b"e":
        colon = data.index(b":", pos)
        end = colon + 1 + int(data[pos:colon])
        name = data[colon + 1:end]
        value_end = _skip(data, end)
        if name == key:
            found = data[end:value_end]
        pos = value_end
    return found


def value_end(data: bytes) -> int | None:
    """Length of the one bencoded value at the start of ``data``, or None while
    it is incomplete.  Lets a reader of a stream (``murder peer --torrent -``)
    stop at the end of a torrent and leave the rest of the stream unread.
    The bytes are only delimited here, not validated: decode them afterwards."""
    try:
        end = _skip(data, 0)
    except (ValueError, IndexError):
        return None
    return end if end <= len(data) else None
