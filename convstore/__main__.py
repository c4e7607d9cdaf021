"""``python -m convstore``: the ``convstore`` command, where the console script is not on the PATH."""

import sys

from convstore.cli import main

sys.exit(main())
