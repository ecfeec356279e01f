"""``python -m ucoauth_client.cli``: the ``ucoauth`` command line without its console script."""

import sys

from ucoauth_client.cli import main

sys.exit(main())
