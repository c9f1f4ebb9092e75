"""Old home of :mod:`murder.auth` (announce tokens), kept for imports written against it.

Tokens are shared by both sides (make-torrent and the peer write them, the
tracker checks them), so they live at the package top level now.
"""

from murder.auth import (AUTH_PARAM, DOMAIN, MAX_TOKENS, MIN_SECRET, TOKEN_HEX,
                         Authoriser, load_secret, redact, token, url_with_token)

__all__ = ["AUTH_PARAM", "DOMAIN", "MAX_TOKENS", "MIN_SECRET", "TOKEN_HEX", "Authoriser",
           "load_secret", "redact", "token", "url_with_token"]
