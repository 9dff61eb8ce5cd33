"""`python -m tollway.cli`, as `python -m tollway`."""

import sys

from tollway.cli.args import main

sys.exit(main())
