"""``python -m cldf`` = the ``cldf`` command (also under ``torchrun``)."""

import sys

from .cli import main

sys.exit(main())
