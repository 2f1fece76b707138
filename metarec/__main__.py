"""``python -m metarec`` is the ``metarec`` command."""

import sys

from metarec.cli import main

sys.exit(main())
