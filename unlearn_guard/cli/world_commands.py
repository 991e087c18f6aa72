"""`unlearn-guard demo` and `unlearn-guard train-world`: the commands of the small shipped shapes world."""

from __future__ import annotations

import argparse


def demo_command(args: argparse.Namespace) -> int:
    """Run `demo`: erase a concept from the shipped model while probing; 1 only with --strict and a failed gate."""
    from ..demo import DemoConfig, run_demo

    calibrated = {} if args.gate_max_memory is None else {"gate_max_memory": args.gate_max_memory}
    config = DemoConfig(concept=args.concept, method=args.method, iterations=args.iterations,
                        probe_every=args.probe_every, seed=args.seed, memory_loss=args.memory_loss,
                        memory_keep_weight=args.memory_keep_weight, memory_guidance=args.memory_guidance,
                        memory_loss_min_weight=args.memory_loss_min_weight,
                        max_prompt_accuracy=args.max_prompt_accuracy, **calibrated)
    result = run_demo(args.output, config, progress=not args.quiet)
    return 0 if result["gate"]["passed"] or not args.strict else 1


def train_world_command(args: argparse.Namespace) -> int:
    """Run `train-world`: train the shapes world's model and classifier into --output."""
    from ..world.train import WorldTrainingConfig, train_world

    config = WorldTrainingConfig(seed=args.seed, threads=args.threads, exclude=args.exclude,
                                 prediction_type=args.prediction_type)
    print(f"training the shapes world into {args.output} with {config}")
    report = train_world(args.output, config, progress=not args.quiet)
    print(f"done in {report['timings']['total_s'] / 60:.1f} min; classifier held-out accuracy "
          f"{report['classifier_heldout_accuracy']:.3f}; generated concept accuracy "
          f"{report['generated_concept_accuracy_mean']:.3f}; VAE PSNR {report['vae_psnr_mean']:.1f} dB")
    return 0
