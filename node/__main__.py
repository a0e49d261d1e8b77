"""`python -m node --config FILE`: one oracle node process (see node.cli)."""

import sys

from node.cli import main

sys.exit(main())
