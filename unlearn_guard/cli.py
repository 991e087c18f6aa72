"""`unlearn-guard` command line. `unlearn-guard demo` runs the main job on the embedded default."""

from __future__ import annotations

import argparse
import sys

from .errors import UnlearnGuardError


def _demo(args: argparse.Namespace) -> int:
    from .demo import DemoConfig, run_demo

    config = DemoConfig(concept=args.concept, method=args.method, iterations=args.iterations,
                        probe_every=args.probe_every, gate_min_d_n=args.gate_min_d_n, seed=args.seed)
    result = run_demo(args.output, config, progress=not args.quiet)
    return 0 if result["gate"]["passed"] or not args.strict else 1


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
    demo = commands.add_parser(
        "demo", help="erase a concept from the shipped small model with ESD-LoRA while probing d_N (no downloads)")
    demo.add_argument("--concept", default="circle", help="shape to erase (default: circle)")
    demo.add_argument("--method", default="esd-x", choices=["esd-x", "esd-u"])
    demo.add_argument("--iterations", type=int, default=150, help="ESD iterations (default: 150)")
    demo.add_argument("--probe-every", type=int, default=50, help="probe cadence in steps (default: 50)")
    demo.add_argument("--gate-min-d-n", type=float, default=2.0, help="gate threshold on d_N (default: 2.0)")
    demo.add_argument("--seed", type=int, default=0, help="seed for every random draw (default: 0)")
    demo.add_argument("--output", default="unlearn_guard_outputs/demo", help="output folder")
    demo.add_argument("--strict", action="store_true", help="exit 1 when the gate fails")
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
