"""``python -m bank_adapter serve ...``: the same as ``dvpsim bank serve ...``."""

import sys

from bank_adapter.cli import main

sys.exit(main(sys.argv[1:]))
