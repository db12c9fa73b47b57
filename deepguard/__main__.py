"""``python -m deepguard`` = the ``deepguard`` command."""

import sys

from deepguard.cli import main

sys.exit(main())
