"""``python -m convstore.cli``: the ``convstore`` command."""

import sys

from convstore.cli import main

sys.exit(main())
