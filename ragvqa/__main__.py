"""``python -m ragvqa`` = the ``ragvqa`` command."""

import sys

from ragvqa.cli import main

sys.exit(main())
