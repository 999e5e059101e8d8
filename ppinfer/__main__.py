"""``python -m ppinfer``: the command line."""

import sys

from ppinfer.cli.main import main

sys.exit(main())
