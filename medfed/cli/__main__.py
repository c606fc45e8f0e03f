"""``python -m medfed.cli ...`` is the ``medfed`` command."""

import sys

from medfed.cli import main

sys.exit(main())
