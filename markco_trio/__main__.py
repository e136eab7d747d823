"""`python -m markco_trio` is the `markco` command."""

import sys

from .cli import main

sys.exit(main())
