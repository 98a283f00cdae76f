"""`python -m dlagraph`."""

import sys

from dlagraph.cli import main

sys.exit(main())
