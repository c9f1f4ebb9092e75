#!/usr/bin/env python3
# Usage: python murder_client.py <peer|seeder> <file.torrent> <saveas> [<ip>]
"""Legacy Murder client: `peer` downloads, then seeds 30 s in the background;
`seeder` seeds until killed.

Drop-in replacement for the 2010 BitTornado script of the same name, used
verbatim by the `murder` Capistrano gem; it runs the installed `murder`
package (see README.md in contrib/capistrano_compat/).  This file stays
parseable by Python 2 so that an old `python` says what is wrong.
"""
import os
import sys

if sys.version_info < (3, 11):
    sys.stderr.write("murder_client.py: needs Python 3.11 or newer (this is %d.%d); "
                     "run it with python3\n" % tuple(sys.version_info[:2]))
    sys.exit(1)

# The gem runs us as `python <dist>/murder_client.py`; find the helper beside us
# even under `python -I`, which leaves the script's folder off sys.path.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _murder_compat  # noqa: E402

if __name__ == "__main__":
    sys.exit(_murder_compat.client_main(sys.argv, __file__))
