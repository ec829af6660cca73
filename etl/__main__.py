"""``python -m etl`` is ``python -m etl.refresh``."""

import sys

from etl.refresh import main

sys.exit(main())
