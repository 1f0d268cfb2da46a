"""``python -m m3rcr.cli``: the same as the ``m3rcr`` command."""

import sys

from m3rcr.cli import main

sys.exit(main())
