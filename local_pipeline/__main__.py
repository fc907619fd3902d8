"""Entry point of ``python -m local_pipeline``."""

import sys

from local_pipeline.cli import main

sys.exit(main())
