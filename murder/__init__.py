"""Murder: fast deploys inside a datacenter over BitTorrent, on Twisted.

One seeder, thousands of peers: every host that holds a piece uploads it to
the others, so a release reaches all of them in about the time one host needs.
"""

from murder.errors import MurderError

__version__ = "0.1.0"

__all__ = ["MurderError", "__version__"]
