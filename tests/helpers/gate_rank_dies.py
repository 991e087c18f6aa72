"""`unlearn-guard gate` with one rank killed (SIGKILL) as it starts a checkpoint: for the tests of
a rank dying mid-gate under torchrun or a direct (srun-like) launch.

    torchrun --nproc-per-node 2 tests/helpers/gate_rank_dies.py RANK CHECKPOINT_INDEX gate ...
"""

from __future__ import annotations

import os
import signal
import sys

from unlearn_guard.gate import sharded


def main() -> int:
    die_rank, die_at, argv = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
    probe_units = sharded._probe_units

    def dying(units, *args, **kwargs):
        if int(os.environ["RANK"]) == die_rank and any(unit.tag == die_at for unit in units):
            os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no goodbye: as an OOM killer or a lost node
        return probe_units(units, *args, **kwargs)

    sharded._probe_units = dying
    from unlearn_guard.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
