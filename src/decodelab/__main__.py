"""`python -m decodelab` is the `decodelab` command."""

import sys

from decodelab.cli import main

sys.exit(main())
