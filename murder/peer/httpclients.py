"""The clients a peer announces through (HTTP(S), and UDP for ``udp://`` trackers).

:class:`~murder.peer.httpget.PlainHTTP` when every tracker is ``http://`` (the
production case: light, no TLS stack loaded), else treq, with our CA and
optionally a client certificate for trackers that require one.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer

from murder.errors import MurderError


def udp_client(reactor: Any, urls: tuple[str, ...]) -> Any:
    """The BEP 15 client when the torrent lists a ``udp://`` tracker, else None."""
    if not any(u.startswith("udp://") for u in urls):
        return None
    from murder.peer.udptracker import UDPTrackerClient

    return UDPTrackerClient(reactor)


def http_client(reactor, ca: str | None, urls: tuple[str, ...] = (),
                client_cert: str | None = None, client_key: str | None = None):
    """The announce client: the light :class:`PlainHTTP` when every tracker is
    ``http://``, else treq; with ``ca``, https trackers must present a
    certificate it signed, and with ``client_cert`` we present ours."""
    if ca is None and all(u.startswith(("http://", "udp://")) for u in urls):
        from murder.peer.httpget import PlainHTTP

        return PlainHTTP(reactor)
    import treq
    from treq.client import HTTPClient
    from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool

    if ca is None:
        return treq
    from twisted.internet.ssl import Certificate

    try:
        with open(ca, "rb") as f:
            root = Certificate.loadPEM(f.read())
    except (OSError, Exception) as e:
        raise MurderError(f"cannot load CA certificate {ca}: {e}") from None
    policy: Any = BrowserLikePolicyForHTTPS(trustRoot=root)
    if client_cert:
        policy = _client_cert_policy(root, client_cert, client_key)
    pool = HTTPConnectionPool(reactor)
    agent = Agent(reactor, contextFactory=policy, pool=pool)
    return _TreqClient(HTTPClient(agent))


def _client_cert_policy(root, cert_path: str, key_path: str | None):
    """An HTTPS policy that verifies the tracker against ``root`` and presents
    our certificate (for trackers started with ``--client-ca``)."""
    from twisted.internet.ssl import PrivateCertificate, optionsForClientTLS
    from twisted.web.iweb import IPolicyForHTTPS
    from zope.interface import implementer

    try:
        with open(cert_path, "rb") as f:
            pem = f.read()
        if key_path:
            with open(key_path, "rb") as f:
                pem += b"\n" + f.read()
        mine = PrivateCertificate.loadPEM(pem)
    except Exception as e:
        raise MurderError(f"cannot load client certificate {cert_path}: {e}") from None

    @implementer(IPolicyForHTTPS)
    class _Policy:
        def creatorForNetloc(self, hostname: bytes, port: int):  # noqa: N802
            return optionsForClientTLS(hostname.decode("ascii"), trustRoot=root,
                                       clientCertificate=mine)

    return _Policy()


class _TreqClient:
    """A treq ``HTTPClient`` with the ``content`` call the announcer makes
    (treq offers it as a module function, not as a client method)."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def get(self, url: str, **kwargs: Any) -> defer.Deferred:
        return self._client.get(url, **kwargs)

    @staticmethod
    def content(response: Any) -> defer.Deferred:
        import treq

        return treq.content(response)


__all__ = ["http_client", "udp_client"]
