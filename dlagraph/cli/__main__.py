"""`python -m dlagraph.cli`."""

import sys

from dlagraph.cli import main

sys.exit(main())
