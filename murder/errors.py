"""One error hierarchy for everything Murder refuses.

Every subclass carries the data that explains the failure and renders it in a
fixed one-line format, so the CLI can print ``str(error)`` and exit non-zero,
and tests can assert on exact messages.  Errors from untrusted bytes
(``ValueError``, ``KeyError`` …) are converted into these at the edge.
"""

from __future__ import annotations


class MurderError(Exception):
    """Base of every error Murder raises on purpose."""

    #: Process exit status the CLI uses for this kind of failure.
    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(MurderError):
    """A command line or configuration value is unusable."""

    exit_code = 2


class MetainfoError(MurderError):
    """A torrent file is malformed; ``field`` names the offending key path."""

    def __init__(self, reason: str, field: str | None = None) -> None:
        self.reason = reason
        self.field = field
        where = f" (at {field})" if field else ""
        super().__init__(f"invalid torrent: {reason}{where}")


class SourceError(MurderError):
    """The file or directory to make a torrent of cannot be used."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"cannot make a torrent of {path}: {reason}")


class AnnounceError(MurderError):
    """A tracker request is malformed or refused; sent back as ``failure reason``."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class TrackerUnreachable(MurderError):
    """No tracker of the torrent answered within the allowed time."""

    def __init__(self, urls: list[str] | tuple[str, ...], seconds: float, last: str) -> None:
        self.urls = tuple(urls)
        self.seconds = seconds
        self.last = last
        super().__init__(
            f"no tracker answered within {_secs(seconds)} ({', '.join(self.urls)}): {last}"
        )


def _secs(seconds: float) -> str:
    """``5s``, ``10.3s``: the real elapsed time, to a tenth of a second."""
    return f"{round(seconds, 1):g}s"


class TrackerRefused(MurderError):
    """A tracker answered, but no announce was accepted within the allowed time.

    Unlike :class:`TrackerUnreachable` the trackers were there: ``answers``
    maps each URL to what it last said (``HTTP 400 Invalid Request``, its
    ``failure reason``) or, for the ones never reached, why.
    """

    def __init__(self, answers: dict[str, str], seconds: float) -> None:
        self.answers = dict(answers)
        self.seconds = seconds
        said = "; ".join(f"{url}: {what}" for url, what in self.answers.items())
        super().__init__(f"tracker refused the announce for {_secs(seconds)}: {said}")


class StalledError(MurderError):
    """A download made no progress for too long (every source gone or banned)."""

    def __init__(self, seconds: float, peers: int, missing: int) -> None:
        self.seconds = seconds
        self.peers = peers
        self.missing = missing
        super().__init__(f"no piece verified for {seconds:g}s with {peers} peers connected; "
                         f"{missing} pieces missing")


class ProtocolError(MurderError):
    """A remote peer broke the wire protocol; its connection is dropped."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"protocol error: {reason}")


class StorageError(MurderError):
    """Reading or writing the payload failed (disk full, permissions, …)."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"storage error at {path}: {reason}")


class PayloadError(MurderError):
    """The payload on disk does not match the torrent (seeder verification)."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"payload {path} does not match the torrent: {reason}")


class TrustError(MurderError):
    """A torrent's signature is missing, unknown or does not verify."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"untrusted torrent: {reason}")


class UDPCodecError(MurderError):
    """A UDP tracker datagram (BEP 15) is malformed; ``transaction`` when readable."""

    def __init__(self, reason: str, transaction: int | None = None) -> None:
        self.reason = reason
        self.transaction = transaction
        super().__init__(reason)
