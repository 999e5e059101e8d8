"""``python -m ppinfer.cli``: the command line, as ``python -m ppinfer``."""

import sys

from ppinfer.cli.main import main

sys.exit(main())
