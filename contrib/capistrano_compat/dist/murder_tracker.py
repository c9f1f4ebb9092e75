#!/usr/bin/env python3
# Usage: python murder_tracker.py [--key value ...]
"""Legacy Murder tracker: HTTP BitTorrent tracker on port 8998, in the foreground.

Drop-in replacement for the 2010 BitTornado script of the same name, used
verbatim by the `murder` Capistrano gem; it runs the installed `murder`
package (see README.md in contrib/capistrano_compat/).  This file stays
parseable by Python 2 so that an old `python` says what is wrong.
"""
import os
import sys

if sys.version_info < (3, 11):
    sys.stderr.write("murder_tracker.py: needs Python 3.11 or newer (this is %d.%d); "
                     "run it with python3\n" % tuple(sys.version_info[:2]))
    sys.exit(1)

# The gem runs us as `python <dist>/murder_tracker.py`; find the helper beside us
# even under `python -I`, which leaves the script's folder off sys.path.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _murder_compat  # noqa: E402

if __name__ == "__main__":
    sys.exit(_murder_compat.tracker_main(sys.argv))
