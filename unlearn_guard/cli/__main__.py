"""`python -m unlearn_guard.cli ...`: the same as `unlearn-guard ...` (torchrun and accelerate launch run it so)."""

import sys

from . import main

sys.exit(main())
