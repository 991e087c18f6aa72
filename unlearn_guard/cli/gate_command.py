"""`unlearn-guard gate`: probe checkpoints against thresholds and decide pass (0) or fail (1)."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

from ..errors import InputError
from .common import Output, probe_config, ranks, search_config, single_checkpoint


def _utility_config(args: argparse.Namespace, seed: int):
    """The UtilityConfig of --utility-erased or --utility-prompts (None when neither is given)."""
    from ..io import read_prompts
    from ..sampling import as_settings
    from ..utility import UtilityConfig

    if args.utility_erased and args.utility_prompts:
        raise InputError("--utility-erased and --utility-prompts: pass one (the small world's kept shapes, or a real "
                         "model's prompts for the CLIP score)")
    if not (args.utility_erased or args.utility_prompts):
        return None
    fields: dict[str, Any] = {"seed": seed}
    if args.utility_n is not None:
        if args.utility_n < 1:
            raise InputError(f"--utility-n: got {args.utility_n}; expected an int >= 1")
        fields["n"] = args.utility_n
    if args.utility_settings is not None:
        try:
            fields["settings"] = as_settings(args.utility_settings, "--utility-settings")
        except InputError as error:  # a bad SCHEDULER:GUIDANCE:STEPS names itself, not the flag
            text = str(error)
            raise type(error)(text if text.startswith("--utility-settings") else f"--utility-settings: {text}") from None
    if args.min_utility is not None:
        from ..gate.decision import Thresholds

        fields["min_ratio"] = Thresholds(min_utility=args.min_utility).min_utility  # "--min-utility: ..." errors
    if args.utility_erased:
        return UtilityConfig.for_world(args.utility_erased, **fields)
    try:
        prompts = read_prompts(args.utility_prompts)
    except InputError as error:
        raise type(error)(f"--utility-prompts: {error}") from None
    return UtilityConfig(prompts=tuple(prompts), clip_model=args.utility_clip_model, **fields)


def _attack_settings(args: argparse.Namespace, seed: int):
    from ..attacks.adversarial_config import AdversarialPromptConfig
    from ..attacks.concept_inversion import ConceptInversionConfig
    from ..gate.attacks import AttackSettings, parse_attacks
    from ..gate.inputs import default_adversarial_preset
    from ..gate.knobs import apply_adversarial_settings

    changes = {"progress": not args.quiet}
    for flag, name in (("ci_steps", "steps"), ("ci_lr", "lr"), ("ci_init_token", "init_token")):
        if getattr(args, flag) is not None:
            changes[name] = getattr(args, flag)
    adversarial = AdversarialPromptConfig.from_preset(args.adv_preset or default_adversarial_preset(args.model))
    return AttackSettings(
        attacks=parse_attacks(args.attacks), support_images=Path(args.support_images) if args.support_images else None,
        search=search_config(args), concept_inversion=ConceptInversionConfig(**changes), judge=args.judge,
        generations=args.ci_generations, adversarial=apply_adversarial_settings(adversarial, args.adv_set),
        adversarial_prompts=Path(args.adv_prompts) if args.adv_prompts else None,
        adversarial_targets=Path(args.adv_targets) if args.adv_targets else None,
        utility=_utility_config(args, seed),
    )


def gate_command(args: argparse.Namespace) -> int:
    """Run `gate`: every check of the arguments first, then the gate (sharded over the ranks when launched)."""
    from ..gate.checkpoints import discover_checkpoints
    from ..gate.decision import Thresholds
    from ..gate.runner import GateConfig

    out = Output(args)
    calibrated = {key: getattr(args, key) for key in ("max_memory", "max_multi_memory", "max_attack_success", "max_asr",
                                                      "min_utility") if getattr(args, key) is not None}
    if args.max_asr is None:  # the default bar of the attack's preset (calibrated for the world)
        from ..gate.decision import default_max_asr
        from ..gate.inputs import default_adversarial_preset

        calibrated["max_asr"] = default_max_asr(args.adv_preset or default_adversarial_preset(args.model))
    thresholds = Thresholds(**calibrated, min_d_n=args.min_dn, max_psnr=args.max_psnr)
    config = probe_config(args)
    settings = _attack_settings(args, config.seed)
    weights_given = any((args.unet_weights, args.text_encoder, args.lora, args.text_encoder_subfolder))
    if args.checkpoints and weights_given:
        raise InputError("--checkpoints: cannot be combined with --unet-weights/--text-encoder/--lora; "
                         "each checkpoint folder holds its own weights")
    checkpoints = discover_checkpoints(args.checkpoints) if args.checkpoints else [single_checkpoint(args)]
    output = Path(args.output)
    gate_config = GateConfig(
        model=args.model, checkpoints=tuple(checkpoints), concept_images=Path(args.concept_images),
        reference_images=Path(args.reference_images), thresholds=thresholds, probe=config, output=output,
        device=args.device, dtype=args.dtype, resume=args.resume, overwrite=args.overwrite,
        thumbnails=args.thumbnails, progress=not args.quiet, attacks=settings,
        model_config=Path(args.model_config) if args.model_config else None,
    )
    with ranks(args) as group:
        if group is not None:
            out = Output(args)  # quiet on ranks other than 0
            gate_config = dataclasses.replace(gate_config, progress=not args.quiet)
        return _gate_on(args, out, config, gate_config.thresholds, checkpoints, gate_config, output)


def _gate_on(args: argparse.Namespace, out: Output, config: Any, thresholds: Any, checkpoints: list, gate_config: Any,
             output: Path) -> int:
    from ..gate.decision import failure_label
    from ..gate.render import report_exit_code, report_verdict
    from ..gate.runner import run_gate, verdict_json

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
    if "adversarial-prompt" in settings.attacks:
        adversarial = settings.adversarial
        rules.append(f"the adversarial-prompt ASR's Wilson upper end <= {thresholds.max_asr:g} (judge {settings.judge}, "
                     f"preset {adversarial.preset}: {len(adversarial.timesteps)} timesteps x "
                     f"{adversarial.steps_per_timestep} steps)")
    if "utility" in settings.attacks:
        utility = settings.utility
        what = "kept shapes' accuracy" if utility.shapes else "CLIP score"
        rules.append(f"the utility ratio to the base >= {thresholds.min_utility:g} ({what}, worst of "
                     f"{len(utility.settings)} sampling setting(s), {utility.n} images per item)")
    probed = {"memory", "multi-memory"} & set(settings.attacks)  # the probe preset means nothing to the others
    out.info(f"gating {len(checkpoints)} checkpoint(s) of {args.model}"
             + (f" with preset {config.preset}" if probed else "") + ": pass when " + " and ".join(rules))
    report = run_gate(gate_config, echo=out.info, notice=out.essential)
    code = report_exit_code(report)
    if out.silent:
        return code
    verdict = {"pass": "PASS", "fail": f"FAIL ({failure_label(report.get('failed') or [])})",
               "inconclusive": "INCONCLUSIVE (the probe cannot read memory in this model)"}[report_verdict(report)]
    out.essential(f"gate: {verdict}: {'; '.join(report['reasons'])}")
    out.essential(f"wrote {output / 'gate.json'} and {output / 'report.html'}")
    if args.json:
        print(json.dumps(verdict_json(report, output), default=str))
    return code
