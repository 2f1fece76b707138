"""``python -m metarec`` is the ``metarec`` command."""

import sys

from metarec.cli.main import main

sys.exit(main())
