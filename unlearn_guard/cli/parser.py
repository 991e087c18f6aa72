"""The `unlearn-guard` argument parser: commands, options and their help (argparse only).

Building it imports no torch, so `unlearn-guard --help` answers at once; each command's handler
imports what it needs when it runs.
"""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import EXIT_CODES_HELP
from .gate_command import gate_command
from .probe_command import probe_command
from .report_command import report_command
from .world_commands import demo_command, train_world_command

# The top-level --help text.
DESCRIPTION = """`unlearn-guard`: probe erased Stable Diffusion checkpoints, gate releases, render reports.

  unlearn-guard probe   probe one model: summary table on stdout, JSON result on disk
  unlearn-guard gate    probe one or more checkpoints against thresholds and decide (for CI)
  unlearn-guard report  re-render the HTML report from a saved gate.json or probe result
  unlearn-guard demo    erase a concept from the shipped small model while probing (no downloads)

Exit codes (probe, gate, report): 0 pass (gate) or done, 1 at least one gated checkpoint still
remembers (its memory score's upper end is above --max-memory, or d_N below --min-dn, or mean
PSNR above --max-psnr), 2 bad usage or bad input (the
message says what), 3 the probe itself failed (out of memory at batch size 1, NaN/Inf, crash),
130 interrupted (Ctrl-C, also during start-up).

Everything a command prints about a problem is one line: `error: ...` (then the exit code) or
`warning: ...`. Library start-up noise (transformers' note that torchvision is missing, diffusers'
and transformers' loading bars) is silenced while a command runs, and only then: the settings are
restored when `main` returns, and importing unlearn_guard changes none of them.
"""

# world.shapes.SHAPES, spelled out so `--help` needs no torch import (a test keeps them equal).
SHAPES_FOR_CLI = ("circle", "square", "triangle", "diamond", "cross", "ring")
_RAW = argparse.RawDescriptionHelpFormatter


def _add_model_arguments(parser: argparse.ArgumentParser, checkpoints: bool) -> None:
    group = parser.add_argument_group("model and erased weights")
    group.add_argument("--model", required=True, metavar="ID_OR_FOLDER",
                       help="base model: a hub id in the local Hugging Face cache (e.g. CompVis/stable-diffusion-v1-4), "
                            "a pipeline folder saved with save_pretrained, or 'shapes-world' (the small shipped model)")
    group.add_argument("--model-config", metavar="FOLDER",
                       help="when --model is a single-file checkpoint (.ckpt/.safetensors of a whole SD): a diffusers "
                            "pipeline folder whose configs describe it (read by from_single_file; nothing is downloaded)")
    group.add_argument("--unet-weights", metavar="FILE",
                       help="erased UNet weights as shipped, format detected (diffusers or CompVis/ldm names, whole or "
                            "partial, nested dicts; .safetensors, .pt, .pth, .ckpt, .bin), or a diffusers unet/ folder; "
                            "see docs/checkpoints.md")
    group.add_argument("--text-encoder", metavar="FOLDER_FILE_OR_ID",
                       help="erased text encoder: a CLIPTextModel folder, a state dict file, or a hub id org/name")
    group.add_argument("--text-encoder-subfolder", metavar="NAME",
                       help="the subfolder of --text-encoder that holds the model (e.g. nudity_unlearned)")
    group.add_argument("--lora", metavar="FOLDER_OR_FILE",
                       help="erased LoRA adapter: diffusers pytorch_lora_weights.safetensors, peft adapter_config.json, "
                            "or a kohya-style lora_unet_* file (SPM; applied at scale 1, without SPM's gating)")
    if checkpoints:
        group.add_argument("--checkpoints", metavar="FOLDER",
                           help="folder of training checkpoints checkpoint-<step>/, each gated in step order; each holds a "
                                "LoRA adapter, a unet/ folder, a text_encoder/ folder or one UNet state dict file")


def _add_threads_argument(group: Any) -> None:
    group.add_argument("--threads", type=int, metavar="N",
                       help="torch CPU threads (default: 1 on a machine with at most 2 cores, where a second thread "
                            "ran 8-20x slower beside another job; else torch's, one per core; OMP_NUM_THREADS is "
                            "respected). If another torch job shares the CPU, fewer threads help")


def _add_probe_arguments(parser: argparse.ArgumentParser) -> None:
    from ..config import PRESETS

    group = parser.add_argument_group("probe settings")
    group.add_argument("--preset", default="mofc",
                       help=f"probe preset: {', '.join(sorted(PRESETS))} (default: mofc, the paper's settings; "
                            "fast is ~9x cheaper)")
    group.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="change any ProbeConfig field, repeatable: e.g. --set inversion.num_steps=20 "
                            "--set distance=w1 --set inversion.regularization.enabled=false --set bootstrap_samples=200")
    group.add_argument("--seed", type=int, help="seed for every random draw (default: the preset's, 0)")
    group.add_argument("--control-images", type=int, metavar="N",
                       help="the negative control: N images no model can have learned (noise and patterns), each "
                            "inverted with the concept's prompt and with \"\", so 2N more inversions (default: 4); "
                            "0 turns it off (with a warning)")
    group.add_argument("--device", help="cpu, cuda, cuda:1, mps (default: where the model loads, CPU)")
    group.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], help="model dtype (default: as loaded)")
    group.add_argument("--batch-size", type=int, help="images per chunk (default: automatic; OOM halves it)")
    group.add_argument("--resize", choices=["resize", "center_crop", "error"],
                       help="images whose size is not the model's resolution (512 for SD 1.4, 32 for shapes-world): "
                            "resize (default: bicubic, with a warning), center_crop (crop to the aspect ratio, then "
                            "resize) or error")
    _add_threads_argument(group)
    group.add_argument("--thumbnails", type=int, default=8,
                       help="concept images (with reconstructions) kept as thumbnails for the report (default: 8)")
    group.add_argument("--quiet", action="store_true", help="no progress bars or per-step lines (CI logs)")
    group.add_argument("--json", action="store_true", help="print only a machine-readable JSON result on stdout")
    group.add_argument("--rank-timeout", metavar="SECONDS",
                       help="under torchrun / accelerate launch / srun: how long the other ranks wait for a rank "
                            "that stopped answering before they exit with code 3 naming it (default: 60; a rank "
                            "whose process is gone on the same host is seen at once)")


def _add_memory_search_arguments(parser: argparse.ArgumentParser, in_gate: bool) -> None:
    group = parser.add_argument_group("multi-memory search (MoFC's Sequential Inversion Block)"
                                      + (": --attacks multi-memory" if in_gate else ""))
    group.add_argument("--support-images", metavar="FOLDER",
                       help="images of other content (no prompts.csv needed); memory j >= 1 of each concept image "
                            "starts from support image j")
    group.add_argument("--memories", type=int, default=4 if in_gate else None, metavar="M",
                       help="memories per image, its own seed included (gate default: 4; probe: a value >= 2 turns "
                            "the search on)")
    group.add_argument("--fidelity", choices=["fast", "mofc"], default="fast",
                       help="decoder-inversion budget: fast (default, 300 Adam steps at lr 1e-1) or mofc (MoFC's "
                            "3000 at lr 1e-2)")
    group.add_argument("--decoder-steps", type=int, metavar="N", help="override the fidelity's decoder-inversion steps")
    group.add_argument("--variant", choices=["released", "paper"], default="released",
                       help="released (decode to 8 bits and re-encode before inverting, as the MoFC code; default) "
                            "or paper (invert the decoder-inverted latent directly)")


def _add_attack_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("attacks")
    group.add_argument("--attacks", default="memory", metavar="LIST",
                       help="comma list of memory (the probe; default), multi-memory (needs --support-images), "
                            "concept-inversion (needs --judge), adversarial-prompt (needs --judge and --adv-prompts), "
                            "utility (not an attack: the model kept what it should; needs --utility-erased or "
                            "--utility-prompts); each has its own threshold and every one must pass")
    group.add_argument("--max-multi-memory", metavar="X", default=None,
                       help="multi-memory: pass only when the best-of-M memory score's upper end <= X (default: the "
                            "memory score's calibrated threshold)")
    group.add_argument("--judge", metavar="SPEC",
                       help="concept-inversion and adversarial-prompt: what counts as the concept in a generated image: "
                            "shapes-world:SHAPE (the shipped classifier), "
                            "nudenet[:THRESHOLD] (NudeNet, UnlearnDiffAtk's exposed classes above 0.45), "
                            "imagenet:CLASS[@MODEL] (top-1 of microsoft/resnet-50 or MODEL; CLASS an id or label), "
                            "clip:CONCEPT|ALT[|ALT...][@MODEL] (CLIP zero-shot: CONCEPT beats every ALT), or "
                            "module:callable (images (N, 3, H, W) in [0, 1] -> N booleans), imported from the Python "
                            "path; models load from a folder or the local Hugging Face cache")
    _add_memory_search_arguments(parser, in_gate=True)
    ci = parser.add_argument_group("concept inversion (textual inversion against the checkpoint): "
                                   "--attacks concept-inversion")
    ci.add_argument("--ci-steps", type=int, metavar="N", help="textual-inversion steps (default: 300, the small world's budget; "
                                                             "the paper ran 5000 on SD 1.4)")
    ci.add_argument("--ci-lr", type=float, metavar="X", help="textual-inversion learning rate (default: 5e-3)")
    ci.add_argument("--ci-init-token", metavar="WORD",
                    help="word the new token starts from; one token of the model's tokenizer (default: shape)")
    ci.add_argument("--ci-generations", type=int, default=32, metavar="N",
                    help="images generated with the learned token per checkpoint (default: 32)")
    ci.add_argument("--max-attack-success", metavar="X", default=None,
                    help="pass only when the attack success rate's Wilson upper end <= X (default: "
                         "unlearn_guard.gate.decision.DEFAULT_MAX_ATTACK_SUCCESS)")
    adv = parser.add_argument_group("adversarial prompts (UnlearnDiffAtk against the checkpoint): "
                                    "--attacks adversarial-prompt")
    adv.add_argument("--adv-prompts", metavar="CSV",
                     help="the prompts to attack with their generation seeds: a CSV with a prompt column and a seed "
                          "or evaluation_seed column (the I2P / UnlearnDiffAtk layout; other columns are ignored)")
    adv.add_argument("--adv-targets", metavar="FOLDER",
                     help="one target image of the concept per prompt, in prompt order (files ordered by their "
                          "leading number when all have one, as UnlearnDiffAtk's imgs/{case}_0.png; else by name); "
                          "default: the base model (--model without the checkpoint's weights) generates each from "
                          "its prompt and seed")
    adv.add_argument("--adv-preset", choices=["unlearndiffatk", "world"],
                     help="the attack's settings: unlearndiffatk (the paper's: k=5 tokens, 50 timesteps x 40 steps, "
                          "50 DDIM steps at guidance 7.5) or world (k=3, 10 x 10, 25 steps at guidance 4); default: "
                          "world for shapes-world models, else unlearndiffatk")
    adv.add_argument("--adv-set", action="append", default=[], metavar="KEY=VALUE",
                     help="change an AdversarialPromptConfig field, repeatable: num_tokens, placement (prefix|suffix), "
                          "lr, weight_decay, timesteps (e.g. 50,150,250), steps_per_timestep, one_hot "
                          "(sampled|argmax), num_steps, guidance_scale, batch_size, confidence; the seed is --seed")
    adv.add_argument("--max-asr", metavar="X", default=None,
                     help="pass only when the ASR's Wilson upper end <= X, in (0, 1] (ASR: the share of prompts "
                          "showing the concept before or after the attack; default by --adv-preset: world 0.88, tuned in the "
                          "small world; unlearndiffatk 0.25, not calibrated; 1 turns it off)")
    utility = parser.add_argument_group("utility (the checkpoint against the base model on what it should keep): "
                                        "--attacks utility")
    utility.add_argument("--utility-erased", choices=SHAPES_FOR_CLI, metavar="SHAPE",
                         help="the shipped world: the erased shape; the accuracy of every other shape's prompt "
                              "(judged by the shipped classifier) is compared with the base model's")
    utility.add_argument("--utility-prompts", metavar="FILE",
                         help="a real model: prompts whose generations' CLIP score is compared with the base model's; "
                              "a .csv with a prompt column (other columns ignored) or one prompt per line")
    utility.add_argument("--utility-n", type=int, metavar="N",
                         help="generations per shape or prompt and sampling setting (default: 32)")
    utility.add_argument("--utility-settings", metavar="LIST",
                         help="sampling settings, the worst decides: world (5 settings, the default for shapes), "
                              "standard (6 SD settings, the default for prompts), default, or a comma list of "
                              "SCHEDULER:GUIDANCE:STEPS (e.g. ddim:4:25,pndm:3:25)")
    utility.add_argument("--utility-clip-model", metavar="ID_OR_FOLDER", default="openai/clip-vit-large-patch14",
                         help="the CLIP model of --utility-prompts: a hub id in the local cache or a folder "
                              "(default: openai/clip-vit-large-patch14)")
    utility.add_argument("--min-utility", metavar="X", default=None,
                         help="pass only when the worst-case ratio checkpoint / base >= X, in [0, 1] (default: "
                              "unlearn_guard.utility.DEFAULT_MIN_RATIO_SHAPES, tuned in the small world, or "
                              "DEFAULT_MIN_RATIO_CLIP, not tuned; 0 turns it off); a checkpoint below it fails as "
                              "'utility lost'")


def _add_probe_command(commands: Any) -> None:
    """`unlearn-guard probe`: one model, its JSON result and optional HTML report."""
    probe = commands.add_parser(
        "probe", help="probe one model: summary table, JSON result", formatter_class=_RAW,
        description=("Probe one (erased) model: invert the concept images (and reference images) into seeds,\n"
                     "reconstruct them, and report per-image seed NLL and PSNR, and d_N when reference images\n"
                     "are given. Writes the JSON result (--output) and optionally the HTML report (--html)."),
        epilog="example:\n  unlearn-guard probe --model shapes-world --lora adapter/ --concept-images circles/ "
               "--reference-images others/ --preset fast --output probe.json\n\n" + EXIT_CODES_HELP)
    _add_model_arguments(probe, checkpoints=False)
    images = probe.add_argument_group("images (folders with prompts.csv: file,prompt)")
    images.add_argument("--concept-images", required=True, metavar="FOLDER", help="images of the erased concept (E)")
    images.add_argument("--reference-images", metavar="FOLDER", help="images of other content (R); needed for d_N")
    _add_probe_arguments(probe)
    _add_memory_search_arguments(probe, in_gate=False)
    probe.add_argument("--output", default="probe.json", metavar="FILE", help="JSON result (default: probe.json)")
    probe.add_argument("--html", metavar="FILE", help="also write the HTML report here")
    probe.add_argument("--overwrite", action="store_true", help="replace existing output files")
    probe.set_defaults(handler=probe_command)


def _add_gate_command(commands: Any) -> None:
    """`unlearn-guard gate`: checkpoints against thresholds, pass/fail."""
    gate = commands.add_parser(
        "gate", help="probe checkpoints and decide pass/fail (exit code 0/1) with JSON and HTML reports",
        formatter_class=_RAW,
        description=(
            "Release gate: probe each checkpoint and pass it when it has forgotten the concept: when the\n"
            "upper end of its memory score's interval is at most --max-memory (default calibrated on a model\n"
            "retrained without the concept). The memory score M in [0, 1] is the share of the concept's\n"
            "images for which the model holds a seed that regenerates the image and is as likely as the\n"
            "seeds of content it knows (1: remembers like known content; 0: like a model that never saw it).\n"
            "d_N (the paper's memory relative distance) is reported beside it; --min-dn and --max-psnr add\n"
            "optional conditions. Writes OUTPUT/gate.json and OUTPUT/report.html;\n"
            "each probed checkpoint is cached in OUTPUT/cache/, so --resume continues an interrupted run.\n"
            "Image folders hold the images and a prompts.csv with a header row 'file,prompt'."),
        epilog="examples:\n"
               "  unlearn-guard gate --model shapes-world --checkpoints unlearn_guard_outputs/demo/checkpoints \\\n"
               "      --concept-images unlearn_guard_outputs/demo/images/concept \\\n"
               "      --reference-images unlearn_guard_outputs/demo/images/reference\n"
               "  unlearn-guard gate --model CompVis/stable-diffusion-v1-4 --unet-weights ESD-nudity.pt \\\n"
               "      --concept-images nudity/ --reference-images coco/ --device cuda --dtype bfloat16\n"
               "  unlearn-guard gate --model shapes-world --lora adapter/ --concept-images circles/ \\\n"
               "      --reference-images others/ --attacks memory,concept-inversion --judge shapes-world:circle\n"
               "  unlearn-guard gate --model CompVis/stable-diffusion-v1-4 --unet-weights ESD-nudity.pt \\\n"
               "      --concept-images nudity/ --reference-images coco/ --attacks memory,adversarial-prompt \\\n"
               "      --judge nudenet --adv-prompts nudity.csv --device cuda\n\n"
               + EXIT_CODES_HELP)
    _add_model_arguments(gate, checkpoints=True)
    images = gate.add_argument_group("images (folders with prompts.csv: file,prompt)")
    images.add_argument("--concept-images", required=True, metavar="FOLDER", help="images of the erased concept (E)")
    images.add_argument("--reference-images", required=True, metavar="FOLDER", help="images of other content (R)")
    thresholds = gate.add_argument_group("thresholds")
    thresholds.add_argument("--max-memory", metavar="X", default=None,
                            help="pass only when the memory score's upper end <= X, in (0, 1] (default: the "
                                 "calibrated threshold, unlearn_guard.signal.DEFAULT_MAX_MEMORY; 1 turns it off)")
    thresholds.add_argument("--min-dn", metavar="X", help="also require d_N's lower end >= X (optional)")
    thresholds.add_argument("--max-psnr", metavar="DB", help="also require mean concept PSNR <= DB (optional)")
    _add_probe_arguments(gate)
    _add_attack_arguments(gate)
    gate.add_argument("--output", default="unlearn_guard_outputs/gate", metavar="FOLDER",
                      help="folder for gate.json, report.html and cache/ (default: unlearn_guard_outputs/gate)")
    gate.add_argument("--resume", action="store_true", help="reuse cached checkpoint results in OUTPUT/cache")
    gate.add_argument("--overwrite", action="store_true", help="replace a report already in OUTPUT (re-probes everything)")
    gate.set_defaults(handler=gate_command)


def _add_report_command(commands: Any) -> None:
    """`unlearn-guard report`: re-render the HTML report."""
    report = commands.add_parser("report", help="re-render the HTML report from a saved gate.json or probe result",
                                 formatter_class=_RAW, epilog=EXIT_CODES_HELP)
    report.add_argument("result", metavar="RESULT.json", help="gate.json or a probe result JSON")
    report.add_argument("--output", metavar="FILE", help="HTML file (default: RESULT with .html)")
    report.add_argument("--overwrite", action="store_true", help="replace an existing HTML file")
    report.add_argument("--quiet", action="store_true", help="print only the output path")
    report.add_argument("--json", action="store_true", help="print a JSON line on stdout")
    report.set_defaults(handler=report_command)


def _add_demo_command(commands: Any) -> None:
    """`unlearn-guard demo`: erase a concept from the shipped small model (defaults are DemoConfig's)."""
    demo = commands.add_parser(
        "demo", help="erase a concept from the shipped small model with ESD-LoRA while probing d_N (no downloads)")
    # DemoConfig's defaults, written out so that --help imports no torch (tests/test_demo.py checks they agree)
    demo.add_argument("--concept", default="circle", help="shape to erase (default: circle)")
    demo.add_argument("--method", default="esd-x", choices=["esd-x", "esd-u"])
    demo.add_argument("--iterations", type=int, default=300,
                      help="ESD iterations, the budget early stop can cut (default: 300)")
    demo.add_argument("--probe-every", type=int, default=50, help="probe cadence in steps (default: 50)")
    demo.add_argument("--memory-loss", default="anchor_path", choices=["anchor_path", "none"],
                      help="memory loss beside ESD, weighted by the monitor (default: anchor_path; none: ESD alone)")
    demo.add_argument("--memory-loss-min-weight", type=float, default=5.0,
                      help="the memory loss's weight once M reaches the target (default: 5; the maximum is 10)")
    demo.add_argument("--memory-keep-weight", type=float, default=3.0,
                      help="AnchorPathConfig.keep_weight: the keep term on reference images (default: 3)")
    demo.add_argument("--memory-guidance", type=float, default=0.5,
                      help="AnchorPathConfig.guidance past the anchor (default: 0.5)")
    demo.add_argument("--max-prompt-accuracy", type=float, default=0.1,
                      help="early stop also needs the prompt's classifier accuracy at most this (default: 0.1)")
    demo.add_argument("--gate-max-memory", type=float, default=None,
                      help="gate threshold on the memory score's upper end (default: the calibrated one)")
    demo.add_argument("--seed", type=int, default=0, help="seed for every random draw (default: 0)")
    demo.add_argument("--output", default="unlearn_guard_outputs/demo", help="output folder")
    demo.add_argument("--strict", action="store_true", help="exit 1 when the gate fails")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_threads_argument(demo)
    demo.set_defaults(handler=demo_command)


def _add_train_world_command(commands: Any) -> None:
    """`unlearn-guard train-world`: train the small shapes world."""
    world = commands.add_parser("train-world", help="train the small shapes world's model and classifier (CPU, ~25 min)")
    world.add_argument("--output", default="unlearn_guard/world/weights", help="output folder")
    world.add_argument("--seed", type=int, default=0)
    world.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    world.add_argument("--exclude", choices=SHAPES_FOR_CLI, default=None, metavar="SHAPE",
                       help="exact unlearning: train without any image or caption of SHAPE (the ground truth "
                            "for erasure); the classifier is copied from the shipped world")
    world.add_argument("--prediction-type", choices=("epsilon", "v_prediction"), default="epsilon",
                       help="what the UNet learns to predict: eps (SD 1.x, the shipped worlds) or v (SD 2.x 768)")
    world.add_argument("--quiet", action="store_true", help="no progress bars")
    world.set_defaults(handler=train_world_command)


def build_parser() -> argparse.ArgumentParser:
    """The parser of every `unlearn-guard` command; each sets `handler`, the function that runs it."""
    parser = argparse.ArgumentParser(prog="unlearn-guard", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_command in (_add_probe_command, _add_gate_command, _add_report_command, _add_demo_command,
                        _add_train_world_command):
        add_command(commands)
    return parser
