"""What the probe and gate commands share: where text goes, the process group, configs from arguments.

Imports of torch and of the rest of unlearn_guard happen inside the functions, so that building
the parser (and `--help`) imports no torch.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from ..errors import InputError


class Output:
    """Where human text goes: stdout, or stderr when --json owns stdout; nothing extra when quiet."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.json = bool(getattr(args, "json", False))
        self.quiet = bool(getattr(args, "quiet", False))
        self.silent = bool(getattr(args, "silent_rank", False))  # a rank other than 0: rank 0 speaks
        self.stream: TextIO = sys.stderr if self.json else sys.stdout

    def essential(self, text: str) -> None:
        """Text every run prints (unless on a rank other than 0): verdicts, written files."""
        if not self.silent:
            print(text, file=self.stream)

    def info(self, text: str) -> None:
        """Text --quiet drops: summaries, progress notes (printed above any progress bar)."""
        if not self.quiet and not self.silent:
            from tqdm.auto import tqdm

            tqdm.write(text, file=self.stream)


def probe_config(args: argparse.Namespace):
    """The ProbeConfig of --preset, --seed, --batch-size, --resize, --control-images and --set."""
    from ..config import ProbeConfig
    from ..gate.knobs import apply_settings

    overrides: dict[str, Any] = {}
    if args.seed is not None:
        overrides["seed"] = args.seed
    if args.batch_size is not None:
        if args.batch_size < 1:
            raise InputError(f"--batch-size: got {args.batch_size}; expected an int >= 1")
        overrides["batch_size"] = args.batch_size
    if args.resize is not None:
        overrides["resize"] = args.resize
    if getattr(args, "control_images", None) is not None:
        overrides["control_images"] = args.control_images
    config = ProbeConfig.from_preset(args.preset, **overrides)
    return apply_settings(config, args.set).replace(progress=not args.quiet)


@contextlib.contextmanager
def ranks(args: argparse.Namespace) -> Iterator[Any]:
    """Under torchrun, accelerate launch or srun (WORLD_SIZE > 1): join the process group for this
    command and yield its session (None otherwise). Ranks other than 0 print no progress, info or
    warnings (their errors still print); the launcher's SIGTERM, sent to the survivors when a rank
    fails, becomes exit code 3 with a line naming the rank."""
    from .. import distributed as distributed_work

    timeout = getattr(args, "rank_timeout", None)
    previous = distributed_work.configure(**_rank_timeouts(timeout)) if timeout is not None else None
    try:
        with distributed_work.launched_group(args.device) as group:
            if group is not None and not group.is_main:
                args.quiet = args.silent_rank = True
                warnings.simplefilter("ignore")  # inside the command's catch_warnings: rank 0 speaks for all
            yield group
    finally:
        if previous is not None:
            distributed_work.configure(**dataclasses.asdict(previous))


def _rank_timeouts(seconds: Any) -> dict[str, float]:
    try:
        value = float(seconds)
    except (TypeError, ValueError):
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise InputError(f"--rank-timeout: got {seconds!r}; expected a number of seconds > 0")
    return {"dead_after_s": value, "heartbeat_s": min(1.0, value / 4)}


def search_config(args: argparse.Namespace):
    """The MemorySearchConfig of --memories, --fidelity, --variant and --decoder-steps."""
    from ..attacks.memories import MemorySearchConfig

    return MemorySearchConfig(memories=args.memories, fidelity=args.fidelity, variant=args.variant,
                              decoder_steps=args.decoder_steps)


def single_checkpoint(args: argparse.Namespace):
    """The one checkpoint of --unet-weights, --text-encoder and --lora (named "base" when none is given)."""
    from ..gate.checkpoints import Checkpoint, Weights

    weights = Weights(unet_weights=args.unet_weights, text_encoder=args.text_encoder, lora=args.lora,
                      text_encoder_subfolder=getattr(args, "text_encoder_subfolder", None))
    names = [Path(p).name for p in (args.unet_weights, args.text_encoder, args.lora) if p]
    return Checkpoint(name=" + ".join(names) if names else "base", weights=weights)
