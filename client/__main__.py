"""``python -m client``: the digits command line (see :mod:`client.cli`)."""

import sys

from client.cli import main

sys.exit(main())
