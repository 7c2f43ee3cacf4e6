"""`python -m detector COMMAND ...`: the same as the installed `detector` command."""

import sys

from .commands import main

sys.exit(main())
