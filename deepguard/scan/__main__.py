"""``python -m deepguard.scan PATH... --out results.jsonl`` = ``deepguard scan``."""

import sys

from deepguard.scan.command import main

sys.exit(main())
