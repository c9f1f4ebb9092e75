"""The tracker's listening endpoint, with optional TLS client-certificate checks.

Twisted's ``ssl:`` endpoint string cannot ask for client certificates; this
module builds the endpoint that can (see :func:`server_endpoint`).
"""

from __future__ import annotations

from typing import Any

from murder.errors import ConfigError


def _load_ca_certificates(path: str) -> list[Any]:
    """Every certificate in the PEM file ``path``, as Twisted ``Certificate`` objects."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding
    from twisted.internet.ssl import Certificate

    try:
        with open(path, "rb") as f:
            certs = x509.load_pem_x509_certificates(f.read())
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror or e}") from None
    except ValueError as e:
        raise ConfigError(f"{path} holds no PEM certificate ({e})") from None
    return [Certificate.loadPEM(c.public_bytes(Encoding.PEM)) for c in certs]


def server_endpoint(reactor: Any, listen: str, client_ca: str | None = None) -> Any:
    """The listening endpoint for ``listen``; with ``client_ca``, TLS that requires
    a client certificate signed by one of the CAs in that PEM file.

    Twisted's ``ssl:`` endpoint string cannot ask for client certificates, so
    the server's key and certificate (loaded by the string parser) are reused
    in a new ``CertificateOptions`` with ``trustRoot``, which makes OpenSSL
    demand and verify a client certificate during the handshake: a client
    without a valid one never gets to send a request.
    """
    from twisted.internet.endpoints import SSL4ServerEndpoint, serverFromString

    endpoint = serverFromString(reactor, listen)
    if client_ca is None:
        return endpoint
    if not isinstance(endpoint, SSL4ServerEndpoint):
        raise ConfigError(f"needs an ssl: --listen endpoint, not {listen!r}")
    from twisted.internet.ssl import CertificateOptions, trustRootFromCertificates

    # The endpoint keeps its arguments in private attributes; read them once
    # here, so a Twisted change fails at start-up (and in the tests), not later.
    server = getattr(endpoint, "_sslContextFactory", None)
    if not isinstance(server, CertificateOptions):
        raise ConfigError("cannot add client verification to this ssl: endpoint")
    options = CertificateOptions(
        privateKey=server.privateKey, certificate=server.certificate,
        extraCertChain=server.extraCertChain or None, dhParameters=server.dhParameters,
        trustRoot=trustRootFromCertificates(_load_ca_certificates(client_ca)))
    return SSL4ServerEndpoint(reactor, endpoint._port, options,
                              backlog=endpoint._backlog, interface=endpoint._interface)


__all__ = ["server_endpoint"]
