"""`unlearn-guard` command line. `unlearn-guard demo` runs the main job on the embedded default."""

from __future__ import annotations

import argparse
import sys

from .config import PRESETS
from .errors import UnlearnGuardError


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    print(f"unlearn-guard demo: probing the embedded tiny model (preset {args.preset}, "
          f"{args.images} concept + {args.images} reference images, seed {args.seed})")
    result, path = run_demo(args.output, args.preset, args.images, args.seed, progress=not args.quiet)
    print(result.summary_table())
    print(f"seconds: {result.provenance['demo_seconds']:.1f} on {result.provenance['device']}; "
          f"UNet evaluations per image: {result.erased.unet_evaluations // len(result.erased.images)}")
    print("note: the embedded model has random weights; d_N here shows the pipeline, not an erasure verdict")
    print(f"result written to {path.resolve()}")
    return 0


def _train_world(args: argparse.Namespace) -> int:
    from .world.train import WorldTrainingConfig, train_world

    config = WorldTrainingConfig(seed=args.seed, threads=args.threads)
    print(f"training the shapes world into {args.output} with {config}")
    report = train_world(args.output, config, progress=not args.quiet)
    print(f"done in {report['timings']['total_s'] / 60:.1f} min; classifier held-out accuracy "
          f"{report['classifier_heldout_accuracy']:.3f}; generated concept accuracy "
          f"{report['generated_concept_accuracy_mean']:.3f}; VAE PSNR {report['vae_psnr_mean']:.1f} dB")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="unlearn-guard", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="probe the embedded tiny model on generated images (no downloads)")
    demo.add_argument("--preset", default="mofc", choices=sorted(PRESETS), help="probe preset (default: mofc)")
    demo.add_argument("--images", type=int, default=4, help="images per set (default: 4)")
    demo.add_argument("--seed", type=int, default=0, help="seed for every random draw (default: 0)")
    demo.add_argument("--output", default="unlearn_guard_outputs/demo", help="output folder")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(handler=_demo)
    world = commands.add_parser("train-world", help="train the small shapes world's model and classifier (CPU, ~25 min)")
    world.add_argument("--output", default="unlearn_guard/world/weights", help="output folder")
    world.add_argument("--seed", type=int, default=0)
    world.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    world.add_argument("--quiet", action="store_true", help="no progress bars")
    world.set_defaults(handler=_train_world)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except UnlearnGuardError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
