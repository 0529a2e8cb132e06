"""``python -m embudget.cli``: the same as the ``embudget`` command."""

import sys

from embudget.cli import main

sys.exit(main())
