"""`unlearn-guard`: probe erased Stable Diffusion checkpoints, gate releases, render reports.

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

from __future__ import annotations

import argparse
import builtins
import contextlib
import dataclasses
import json
import logging
import os
import signal
import sys
import threading
import traceback
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, TextIO

from .errors import (EXIT_BAD_INPUT, EXIT_CODES_HELP, EXIT_FAIL, EXIT_INTERRUPTED, EXIT_PASS, EXIT_PROBE_FAILED,  # noqa: F401
                     InputError, UnlearnGuardError, exit_code_of, one_line)

# Commands that load models (and so import diffusers and transformers).
_MODEL_COMMANDS = ("probe", "gate", "demo", "train-world")
# world.shapes.SHAPES, spelled out so `--help` needs no torch import (a test keeps them equal).
SHAPES_FOR_CLI = ("circle", "square", "triangle", "diamond", "cross", "ring")


def _demo(args: argparse.Namespace) -> int:
    from .demo import DemoConfig, run_demo

    calibrated = {} if args.gate_max_memory is None else {"gate_max_memory": args.gate_max_memory}
    config = DemoConfig(concept=args.concept, method=args.method, iterations=args.iterations,
                        probe_every=args.probe_every, seed=args.seed, memory_loss=args.memory_loss,
                        memory_keep_weight=args.memory_keep_weight, memory_guidance=args.memory_guidance,
                        memory_loss_min_weight=args.memory_loss_min_weight,
                        max_prompt_accuracy=args.max_prompt_accuracy, **calibrated)
    result = run_demo(args.output, config, progress=not args.quiet)
    return 0 if result["gate"]["passed"] or not args.strict else 1


def _train_world(args: argparse.Namespace) -> int:
    from .world.train import WorldTrainingConfig, train_world

    config = WorldTrainingConfig(seed=args.seed, threads=args.threads, exclude=args.exclude)
    print(f"training the shapes world into {args.output} with {config}")
    report = train_world(args.output, config, progress=not args.quiet)
    print(f"done in {report['timings']['total_s'] / 60:.1f} min; classifier held-out accuracy "
          f"{report['classifier_heldout_accuracy']:.3f}; generated concept accuracy "
          f"{report['generated_concept_accuracy_mean']:.3f}; VAE PSNR {report['vae_psnr_mean']:.1f} dB")
    return 0


# --------------------------------------------------------------------------- shared helpers
class _Output:
    """Where human text goes: stdout, or stderr when --json owns stdout; nothing extra when quiet."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.json = bool(getattr(args, "json", False))
        self.quiet = bool(getattr(args, "quiet", False))
        self.silent = bool(getattr(args, "silent_rank", False))  # a rank other than 0: rank 0 speaks
        self.stream: TextIO = sys.stderr if self.json else sys.stdout

    def essential(self, text: str) -> None:
        if not self.silent:
            print(text, file=self.stream)

    def info(self, text: str) -> None:
        if not self.quiet and not self.silent:
            from tqdm.auto import tqdm

            tqdm.write(text, file=self.stream)


class _DropMessages(logging.Filter):
    """Drops log records whose message contains any of `fragments`."""

    def __init__(self, *fragments: str) -> None:
        super().__init__()
        self.fragments = fragments

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(fragment in message for fragment in self.fragments)


# transformers logs, from the image-processor fallback it sets up when torchvision is absent, a
# note per processor class ("`CLIPImageProcessor` requires torchvision (not installed); ...").
# Nothing here processes images with transformers, so the note is noise for our commands.
_TORCHVISION_NOTE = ("transformers.utils.import_utils", _DropMessages("requires torchvision"))


def _one_line_warnings(stream: TextIO) -> Any:
    """A `warnings.showwarning` that prints `warning: <message>` on one line, each text once."""
    seen: set[str] = set()

    def show(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001 - warnings' API
        text = " ".join(str(message).split())
        if text in seen:  # e.g. the same long-prompt note from each gated checkpoint's probe
            return
        seen.add(text)
        from tqdm.auto import tqdm

        tqdm.write(f"warning: {text}", file=stream)  # above any progress bar, not through it

    return show


@contextlib.contextmanager
def _progress_bars_off(libraries: tuple[str, ...]) -> Iterator[None]:
    """diffusers' "Loading pipeline components" and transformers' "Loading weights" bars off, then back."""
    import importlib

    restore = []
    for name in libraries:
        library_logging = importlib.import_module(f"{name}.utils.logging")
        if library_logging.is_progress_bar_enabled():
            library_logging.disable_progress_bar()
            restore.append(library_logging.enable_progress_bar)
    try:
        yield
    finally:
        for enable in restore:
            enable()


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def default_threads() -> int | None:
    """The CLI's thread count when --threads is not given: 1 on a machine with at most 2 usable
    cores, else None (torch's default); None too when OMP_NUM_THREADS says what the user wants.

    Measured (benchmarks/threads_contention.py, RESULTS.md): on 2 cores shared with other torch
    jobs, ESD steps of the demo took a median 15-22 s with 2 threads against 0.8-2.9 s with 1,
    because OpenMP threads spin-wait for cores another process holds. On 2 cores the best case of
    a second thread is 2x; the measured worst case was 20x the other way.
    """
    if "OMP_NUM_THREADS" in os.environ or _usable_cores() > 2:
        return None
    return 1


@contextlib.contextmanager
def _threads(count: int | None) -> Iterator[None]:
    """torch's intra-op CPU threads set to `count` (None: `default_threads()`), restored afterwards."""
    if count is None:
        count = default_threads()
        if count is None:
            yield
            return
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise InputError(f"--threads: got {count!r}; expected an int >= 1 (default: 1 on machines with at most "
                         "2 cores, else torch's: one per core)")
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def _command_scope(args: argparse.Namespace) -> Iterator[None]:
    """What a command runs inside: one-line warnings, no library start-up noise, --threads.

    Everything is set on entry and restored on exit, so calling `main` from Python leaves the
    caller's warning filters, logging and progress bars as they were.
    """
    loads_models = args.command in _MODEL_COMMANDS
    logger_name, note_filter = _TORCHVISION_NOTE
    with contextlib.ExitStack() as stack:
        stack.enter_context(warnings.catch_warnings())
        warnings.showwarning = _one_line_warnings(sys.stderr)
        logging.getLogger(logger_name).addFilter(note_filter)
        stack.callback(logging.getLogger(logger_name).removeFilter, note_filter)
        if loads_models:
            stack.enter_context(_progress_bars_off(("diffusers", "transformers")))
            stack.enter_context(_threads(getattr(args, "threads", None)))
        yield


def _probe_config(args: argparse.Namespace):
    from .config import ProbeConfig
    from .gate.knobs import apply_settings

    overrides: dict[str, Any] = {}
    if args.seed is not None:
        overrides["seed"] = args.seed
    if args.batch_size is not None:
        if args.batch_size < 1:
            raise InputError(f"--batch-size: got {args.batch_size}; expected an int >= 1")
        overrides["batch_size"] = args.batch_size
    if args.resize is not None:
        overrides["resize"] = args.resize
    config = ProbeConfig.from_preset(args.preset, **overrides)
    return apply_settings(config, args.set).replace(progress=not args.quiet)


@contextlib.contextmanager
def _ranks(args: argparse.Namespace) -> Iterator[Any]:
    """Under torchrun, accelerate launch or srun (WORLD_SIZE > 1): join the process group for this
    command and yield its session (None otherwise). Ranks other than 0 print no progress, info or
    warnings (their errors still print); the launcher's SIGTERM, sent to the survivors when a rank
    fails, becomes exit code 3 with a line naming the rank."""
    from . import distributed as distributed_work

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


def _search_config(args: argparse.Namespace):
    from .attacks.memories import MemorySearchConfig

    return MemorySearchConfig(memories=args.memories, fidelity=args.fidelity, variant=args.variant,
                              decoder_steps=args.decoder_steps)


def _attack_settings(args: argparse.Namespace):
    from .attacks.concept_inversion import ConceptInversionConfig
    from .gate.attacks import AttackSettings, parse_attacks

    changes = {"progress": not args.quiet}
    for flag, name in (("ci_steps", "steps"), ("ci_lr", "lr"), ("ci_init_token", "init_token")):
        if getattr(args, flag) is not None:
            changes[name] = getattr(args, flag)
    return AttackSettings(
        attacks=parse_attacks(args.attacks), support_images=Path(args.support_images) if args.support_images else None,
        search=_search_config(args), concept_inversion=ConceptInversionConfig(**changes), judge=args.judge,
        generations=args.ci_generations,
    )


def _single_checkpoint(args: argparse.Namespace):
    from .gate.checkpoints import Checkpoint, Weights

    weights = Weights(unet_weights=args.unet_weights, text_encoder=args.text_encoder, lora=args.lora)
    names = [Path(p).name for p in (args.unet_weights, args.text_encoder, args.lora) if p]
    return Checkpoint(name=" + ".join(names) if names else "base", weights=weights)


# --------------------------------------------------------------------------- probe
def _probe(args: argparse.Namespace) -> int:
    with _ranks(args) as group:
        return _probe_on(args, group)


def _probe_on(args: argparse.Namespace, group: Any) -> int:
    from .gate.checkpoints import model_fingerprint, weight_hashes
    from .gate.runner import check_device, check_dtype, load_and_probe, load_folder, model_resolution
    from .gate.runner import resolve_model_source, thumbnail_rows
    from .report.loading import PROBE_KIND
    from .files import check_writable_folder, write_text_atomic

    out = _Output(args)
    config = _probe_config(args)
    check_device(args.device)
    check_dtype(args.dtype)
    checkpoint = _single_checkpoint(args)
    output = Path(args.output)
    if output.exists() and not args.overwrite:
        raise InputError(f"--output: {str(output)!r} already exists; pass --overwrite to replace it or choose another file")
    if args.html and Path(args.html).exists() and not args.overwrite:
        raise InputError(f"--html: {str(args.html)!r} already exists; pass --overwrite to replace it or choose another file")
    source = resolve_model_source(args.model)
    sizing = {"resolution": model_resolution(source), "resize": config.resize}
    concept = load_folder(args.concept_images, "--concept-images", minimum=1, **sizing)
    reference = load_folder(args.reference_images, "--reference-images", **sizing) if args.reference_images else None
    check_writable_folder(output.parent, "--output", file=output)  # before any compute, not after it
    if args.html:
        check_writable_folder(Path(args.html).parent, "--html", file=args.html)
    config = config.replace(keep_reconstructions=args.thumbnails > 0)
    search = None
    if args.memories is not None and args.memories > 1 or args.support_images:
        from .gate.runner import load_support_folder

        search = _search_config(args)
        if args.memories is None or args.memories < 2:
            raise InputError("--support-images: given, but the multi-memory search needs --memories M >= 2")
        support = load_support_folder(args.support_images, search.memories - 1, sizing["resolution"],
                                      config.resize) if args.support_images else None
        if support is None:
            raise InputError(f"--memories {args.memories}: the multi-memory search needs --support-images FOLDER "
                             "(images of other content)")
    if search is not None and group is not None:
        raise InputError("--memories: under torchrun/accelerate launch/srun the probe shards the memory probe only; "
                         "run the multi-memory search in one process")
    if search is None:
        result = load_and_probe(source, checkpoint, concept, reference, config, args.device, args.dtype,
                                distributed=group is not None)
        found = None
    else:
        from .attacks.memories import find_memories
        from .gate.attacks import multi_memory_part
        from .gate.runner import attack_failures, load_checkpoint_model

        model = load_checkpoint_model(source, checkpoint, args.device, args.dtype)
        with attack_failures(checkpoint, "the multi-memory search of"):
            found = find_memories(model, concept, support=support, search=search, reference=reference,
                                  config=config.replace(keep_seeds=True, keep_reconstructions=True))
        result = found.probe
    if group is not None and not group.is_main:
        return EXIT_PASS  # the same result as rank 0's, which writes it
    data = result.to_dict()
    if found is not None:
        data["multi_memory"] = multi_memory_part(found, concept, args.thumbnails)
    data.update(kind=PROBE_KIND, model=model_fingerprint(source), weights=checkpoint.weights.to_dict(),
                weight_sha256=weight_hashes(checkpoint.weights), normal_nll=[float(v) for v in result.normal_nll],
                thumbnails=thumbnail_rows(concept, result, args.thumbnails))
    write_text_atomic(output, json.dumps(data, indent=1))
    out.info(result.summary_table())
    if found is not None:
        out.info(found.summary_table())
    out.essential(f"wrote {output}")
    if args.html:
        from .report.html import render_report
        from .report.loading import report_from_probe

        write_text_atomic(args.html, render_report(report_from_probe(data)))
        out.essential(f"wrote {args.html}")
    if args.json:
        md, memory = result.memory_distance, result.memory
        print(json.dumps({
            "memory": None if memory is None else {"value": memory.value, "ci_low": memory.ci_low, "ci_high": memory.ci_high},
            "d_n": None if md is None else md.value, "ci_low": None if md is None else md.ci_low,
            "ci_high": None if md is None else md.ci_high, "distance_kind": None if md is None else md.kind,
            "psnr_mean": data["erased"]["summary"]["psnr_mean"], "nll_mean": data["erased"]["summary"]["nll_mean"],
            "diverged": data["erased"]["summary"]["diverged"], "notes": result.notes,
            "preset": config.preset, "output": str(output),
            **({} if found is None else {"multi_memory": {
                "memory": None if found.memory is None else {"value": found.memory.value, "ci_low": found.memory.ci_low,
                                                             "ci_high": found.memory.ci_high},
                **{k: v for k, v in found.summary().items() if k != "distinct_memories"}}}),
        }, default=str))
    return EXIT_PASS


# --------------------------------------------------------------------------- gate
def _gate(args: argparse.Namespace) -> int:
    from .gate.checkpoints import discover_checkpoints
    from .gate.decision import Thresholds
    from .gate.runner import GateConfig

    out = _Output(args)
    calibrated = {key: getattr(args, key) for key in ("max_memory", "max_multi_memory", "max_attack_success")
                  if getattr(args, key) is not None}
    thresholds = Thresholds(**calibrated, min_d_n=args.min_dn, max_psnr=args.max_psnr)
    settings = _attack_settings(args)
    config = _probe_config(args)
    weights_given = any((args.unet_weights, args.text_encoder, args.lora))
    if args.checkpoints and weights_given:
        raise InputError("--checkpoints: cannot be combined with --unet-weights/--text-encoder/--lora; "
                         "each checkpoint folder holds its own weights")
    checkpoints = discover_checkpoints(args.checkpoints) if args.checkpoints else [_single_checkpoint(args)]
    output = Path(args.output)
    gate_config = GateConfig(
        model=args.model, checkpoints=tuple(checkpoints), concept_images=Path(args.concept_images),
        reference_images=Path(args.reference_images), thresholds=thresholds, probe=config, output=output,
        device=args.device, dtype=args.dtype, resume=args.resume, overwrite=args.overwrite,
        thumbnails=args.thumbnails, progress=not args.quiet, attacks=settings,
    )
    with _ranks(args) as group:
        if group is not None:
            out = _Output(args)  # quiet on ranks other than 0
            gate_config = dataclasses.replace(gate_config, progress=not args.quiet)
        return _gate_on(args, out, config, thresholds, checkpoints, gate_config, output)


def _gate_on(args: argparse.Namespace, out: "_Output", config: Any, thresholds: Any, checkpoints: list, gate_config: Any,
             output: Path) -> int:
    from .gate.runner import run_gate, verdict_json

    settings = gate_config.attacks
    level = int(round(config.confidence * 100))
    rules = []
    if "memory" in settings.attacks:
        rules.append(f"the memory score's {level}% upper end <= {thresholds.max_memory:g}"
                     + (f" and d_N's lower end >= {thresholds.min_d_n:g}" if thresholds.min_d_n is not None else "")
                     + (f" and mean PSNR <= {thresholds.max_psnr:g} dB" if thresholds.max_psnr is not None else ""))
    if "multi-memory" in settings.attacks:
        rules.append(f"the best-of-{settings.search.memories} memory score's upper end <= "
                     f"{thresholds.max_multi_memory:g} (multi-memory, {settings.search.variant}, "
                     f"fidelity {settings.search.fidelity})")
    if "concept-inversion" in settings.attacks:
        rules.append(f"the concept-inversion success rate's Wilson upper end <= {thresholds.max_attack_success:g} "
                     f"(judge {settings.judge}, {settings.concept_inversion.steps} steps, "
                     f"{settings.generations} generations)")
    out.info(f"gating {len(checkpoints)} checkpoint(s) of {args.model} with preset {config.preset}: pass when "
             + " and ".join(rules))
    report = run_gate(gate_config, echo=out.info, notice=out.essential)
    if out.silent:
        return EXIT_PASS if report["passed"] else EXIT_FAIL
    verdict = "PASS" if report["passed"] else "FAIL (still remembers)"
    out.essential(f"gate: {verdict}: {'; '.join(report['reasons'])}")
    out.essential(f"wrote {output / 'gate.json'} and {output / 'report.html'}")
    if args.json:
        print(json.dumps(verdict_json(report, output), default=str))
    return EXIT_PASS if report["passed"] else EXIT_FAIL


# --------------------------------------------------------------------------- report
def _report(args: argparse.Namespace) -> int:
    from .gate.runner import summary_line
    from .report.html import render_report
    from .report.loading import load_report
    from .files import write_text_atomic

    out = _Output(args)
    report = load_report(args.result)
    target = Path(args.output) if args.output else Path(args.result).with_suffix(".html")
    if target.exists() and not args.overwrite:
        raise InputError(f"--output: {str(target)!r} already exists; pass --overwrite to replace it or choose another file")
    write_text_atomic(target, render_report(report))
    verdict = report.get("verdict")
    out.info(f"verdict: {verdict.upper() if verdict else 'none (probe result)'}")
    for record in report["checkpoints"]:
        out.info(f"  {record['name']}: {summary_line(record)}" + (f" -> {record['verdict'].upper()}" if record.get("verdict") else ""))
    out.essential(f"wrote {target}")
    if args.json:
        print(json.dumps({"verdict": verdict, "output": str(target)}))
    return EXIT_PASS


# --------------------------------------------------------------------------- parser
def _add_model_arguments(parser: argparse.ArgumentParser, checkpoints: bool) -> None:
    group = parser.add_argument_group("model and erased weights")
    group.add_argument("--model", required=True, metavar="ID_OR_FOLDER",
                       help="base model: a hub id in the local Hugging Face cache (e.g. CompVis/stable-diffusion-v1-4), "
                            "a pipeline folder saved with save_pretrained, or 'shapes-world' (the small shipped model)")
    group.add_argument("--unet-weights", metavar="FILE",
                       help="erased full UNet state dict with diffusers key names (.safetensors, .pt, .pth, .ckpt, .bin)")
    group.add_argument("--text-encoder", metavar="FOLDER", help="erased replacement CLIPTextModel folder")
    group.add_argument("--lora", metavar="FOLDER",
                       help="erased LoRA adapter folder (diffusers pytorch_lora_weights.safetensors or peft adapter_config.json)")
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
    from .config import PRESETS

    group = parser.add_argument_group("probe settings")
    group.add_argument("--preset", default="mofc",
                       help=f"probe preset: {', '.join(sorted(PRESETS))} (default: mofc, the paper's settings; "
                            "fast is ~9x cheaper)")
    group.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="change any ProbeConfig field, repeatable: e.g. --set inversion.num_steps=20 "
                            "--set distance=w1 --set inversion.regularization.enabled=false --set bootstrap_samples=200")
    group.add_argument("--seed", type=int, help="seed for every random draw (default: the preset's, 0)")
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
                            "concept-inversion (needs --judge); each has its own threshold and every one must pass")
    group.add_argument("--max-multi-memory", metavar="X", default=None,
                       help="multi-memory: pass only when the best-of-M memory score's upper end <= X (default: the "
                            "memory score's calibrated threshold)")
    _add_memory_search_arguments(parser, in_gate=True)
    ci = parser.add_argument_group("concept inversion (textual inversion against the checkpoint): "
                                   "--attacks concept-inversion")
    ci.add_argument("--judge", metavar="SPEC",
                    help="what counts as the concept in a generated image: shapes-world:SHAPE (the shipped classifier) "
                         "or module:callable (images (N, 3, H, W) in [0, 1] -> N booleans), imported from the Python path")
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="unlearn-guard", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    raw = argparse.RawDescriptionHelpFormatter

    probe = commands.add_parser(
        "probe", help="probe one model: summary table, JSON result", formatter_class=raw,
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
    probe.set_defaults(handler=_probe)

    gate = commands.add_parser(
        "gate", help="probe checkpoints and decide pass/fail (exit code 0/1) with JSON and HTML reports",
        formatter_class=raw,
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
               "      --reference-images others/ --attacks memory,concept-inversion --judge shapes-world:circle\n\n"
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
    gate.set_defaults(handler=_gate)

    report = commands.add_parser("report", help="re-render the HTML report from a saved gate.json or probe result",
                                 formatter_class=raw, epilog=EXIT_CODES_HELP)
    report.add_argument("result", metavar="RESULT.json", help="gate.json or a probe result JSON")
    report.add_argument("--output", metavar="FILE", help="HTML file (default: RESULT with .html)")
    report.add_argument("--overwrite", action="store_true", help="replace an existing HTML file")
    report.add_argument("--quiet", action="store_true", help="print only the output path")
    report.add_argument("--json", action="store_true", help="print a JSON line on stdout")
    report.set_defaults(handler=_report)

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
    demo.set_defaults(handler=_demo)
    world = commands.add_parser("train-world", help="train the small shapes world's model and classifier (CPU, ~25 min)")
    world.add_argument("--output", default="unlearn_guard/world/weights", help="output folder")
    world.add_argument("--seed", type=int, default=0)
    world.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    world.add_argument("--exclude", choices=SHAPES_FOR_CLI, default=None, metavar="SHAPE",
                       help="exact unlearning: train without any image or caption of SHAPE (the ground truth "
                            "for erasure); the classifier is copied from the shipped world")
    world.add_argument("--quiet", action="store_true", help="no progress bars")
    world.set_defaults(handler=_train_world)
    return parser


def _interrupted(command: str | None) -> int:
    if command is None:
        message = "interrupted during start-up; nothing was run"
    elif command == "gate":
        message = "interrupted; finished checkpoints are cached: rerun with --resume to continue"
    else:
        message = f"interrupted; {command} did not finish"
    print(message, file=sys.stderr)
    return EXIT_INTERRUPTED


def _run(args: argparse.Namespace, started: list[str]) -> tuple[int, str | None]:
    """The command's exit code and, when it failed, the one-line error message."""
    from .distributed import LauncherStopped  # imports torch: seconds, inside main's Ctrl-C handling

    if _SIGINT_SEEN:  # a library's bare `except:` swallowed the KeyboardInterrupt during its import
        raise KeyboardInterrupt
    try:
        with _command_scope(args):
            started.append(args.command)
            return args.handler(args), None
    except (UnlearnGuardError, LauncherStopped) as error:  # each carries its exit code (errors.py); a rank's failure too
        code = exit_code_of(error)
        return code, ("probe failed: " if code == EXIT_PROBE_FAILED else "") + one_line(error)
    except Exception as error:  # noqa: BLE001 - a crash is a failed probe (3), never a verdict (1)
        if _SIGINT_SEEN:  # the interrupt, half swallowed by a library, left it broken: still an interrupt
            raise KeyboardInterrupt from None
        traceback.print_exc(file=sys.stderr)
        return EXIT_PROBE_FAILED, f"probe failed unexpectedly: {type(error).__name__}: {one_line(error)}"


_SIGINT_SEEN: list[int] = []


_IMPORT_DEPTH = [0]  # nested `import` statements running in the main thread
_DEFERRED: list[int] = []  # interrupts that arrived during an import, raised when it ends


def _on_sigint(signum: int, frame: Any) -> None:
    """Python's own Ctrl-C behaviour (raise KeyboardInterrupt), remembered: some third-party import
    code catches everything with a bare `except:`, and an interrupt landing there must not be lost.
    During an import it is deferred to the end of the outermost `import` statement: raised inside a
    C extension's initialisation (triton's libtriton calls back into Python), it aborted the
    process (exit -6, seen once in a full test run)."""
    _SIGINT_SEEN.append(signum)
    if _IMPORT_DEPTH[0] > 0:
        _DEFERRED.append(signum)
        return
    raise KeyboardInterrupt


def _guarded_import(original: Callable[..., Any]) -> Callable[..., Any]:
    """`builtins.__import__` that raises a deferred interrupt once the outermost import returns."""
    def importing(*args: Any, **kwargs: Any) -> Any:
        if threading.current_thread() is not threading.main_thread():
            return original(*args, **kwargs)
        _IMPORT_DEPTH[0] += 1
        try:
            return original(*args, **kwargs)
        finally:
            _IMPORT_DEPTH[0] -= 1
            if _IMPORT_DEPTH[0] == 0 and _DEFERRED:
                _DEFERRED.clear()
                raise KeyboardInterrupt
    return importing


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (see the module docstring).

    Everything runs under one Ctrl-C handler, the imports of torch and diffusers included (they
    take seconds), so an interrupt at any point exits 130 with one line and no traceback.
    """
    started: list[str] = []  # the command, once its handler runs
    _SIGINT_SEEN.clear()
    _DEFERRED.clear()
    _IMPORT_DEPTH[0] = 0
    previous = None
    original_import = builtins.__import__
    if (threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler):  # not when the caller has its own
        previous = signal.signal(signal.SIGINT, _on_sigint)
        builtins.__import__ = _guarded_import(original_import)
    try:
        return _main(argv, started)
    finally:
        if previous is not None:
            builtins.__import__ = original_import
            signal.signal(signal.SIGINT, previous)


def _main(argv: list[str] | None, started: list[str]) -> int:
    try:
        parser = build_parser()
        try:
            args = parser.parse_args(argv)
        except SystemExit as stop:  # argparse: 2 on bad usage (message printed), 0 for --help
            return stop.code if isinstance(stop.code, int) else EXIT_BAD_INPUT
        code, message = _run(args, started)
    except KeyboardInterrupt:
        return _interrupted(started[0] if started else None)
    except Exception:
        if _SIGINT_SEEN:  # e.g. an import that a swallowed interrupt left half done (numpy: RecursionError)
            return _interrupted(started[0] if started else None)
        raise
    if message is None:
        return code
    print(f"error: {message}", file=sys.stderr)
    if getattr(args, "json", False):
        print(json.dumps({"verdict": "error", "exit_code": code, "error": message}))
    return code


if __name__ == "__main__":
    sys.exit(main())
