"""``python -m lrdif`` and ``torchrun -m lrdif`` enter the same command line."""

import sys

from lrdif.cli import main

sys.exit(main())
