"""``python -m rlhf``: the same commands as ``rlhf-studio`` minus the studio's own."""

import sys

from rlhf.cli import main

sys.exit(main())
