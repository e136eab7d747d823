"""`python -m markco_editor`: the same as the `markco-editor` command."""

import sys

from markco_editor.cli import main

sys.exit(main())
