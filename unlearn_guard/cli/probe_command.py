"""`unlearn-guard probe`: probe one model, write its JSON result (and optionally the HTML report)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..errors import EXIT_PASS, InputError
from .common import Output, probe_config, ranks, search_config, single_checkpoint


def probe_command(args: argparse.Namespace) -> int:
    """Run `probe` (sharded over the ranks when launched by torchrun, accelerate launch or srun)."""
    with ranks(args) as group:
        return _probe_on(args, group)


def _probe_on(args: argparse.Namespace, group: Any) -> int:
    from ..files import check_writable_folder, write_text_atomic
    from ..gate.checkpoints import model_fingerprint, weight_hashes
    from ..gate.runner import (
        check_device,
        check_dtype,
        load_and_probe,
        load_folder,
        model_resolution,
        resolve_model_source,
        thumbnail_rows,
    )
    from ..report.loading import PROBE_KIND

    out = Output(args)
    config = probe_config(args)
    check_device(args.device)
    check_dtype(args.dtype)
    checkpoint = single_checkpoint(args)
    output = Path(args.output)
    if output.exists() and not args.overwrite:
        raise InputError(f"--output: {str(output)!r} already exists; pass --overwrite to replace it or choose another file")
    if args.html and Path(args.html).exists() and not args.overwrite:
        raise InputError(f"--html: {str(args.html)!r} already exists; pass --overwrite to replace it or choose another file")
    source = resolve_model_source(args.model)
    model_config = Path(args.model_config) if args.model_config else None
    sizing = {"resolution": model_resolution(str(model_config) if model_config and Path(source).is_file() else source),
              "resize": config.resize}
    concept = load_folder(args.concept_images, "--concept-images", minimum=1, **sizing)
    reference = load_folder(args.reference_images, "--reference-images", **sizing) if args.reference_images else None
    check_writable_folder(output.parent, "--output", file=output)  # before any compute, not after it
    if args.html:
        check_writable_folder(Path(args.html).parent, "--html", file=args.html)
    config = config.replace(keep_reconstructions=args.thumbnails > 0)
    search = None
    if args.memories is not None and args.memories > 1 or args.support_images:
        from ..gate.runner import load_support_folder

        search = search_config(args)
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
                                distributed=group is not None, model_config=model_config)
        found = None
    else:
        from ..attacks.memories import find_memories
        from ..gate.attacks import multi_memory_part
        from ..gate.runner import attack_failures, load_checkpoint_model

        model = load_checkpoint_model(source, checkpoint, args.device, args.dtype, model_config)
        with attack_failures(checkpoint, "the multi-memory search of"):
            found = find_memories(model, concept, support=support, search=search, reference=reference,
                                  config=config.replace(keep_seeds=True, keep_reconstructions=True))
        result = found.probe
    if group is not None and not group.is_main:
        return EXIT_PASS  # the same result as rank 0's, which writes it
    data = result.to_dict()
    if found is not None:
        data["multi_memory"] = multi_memory_part(found, concept, args.thumbnails)
    data.update(kind=PROBE_KIND, model=model_fingerprint(source, model_config), weights=checkpoint.weights.to_dict(),
                loaded_weights=list(result.provenance.get("loaded_weights") or []),
                weight_sha256=weight_hashes(checkpoint.weights), normal_nll=[float(v) for v in result.normal_nll],
                thumbnails=thumbnail_rows(concept, result, args.thumbnails))
    write_text_atomic(output, json.dumps(data, indent=1))
    for loaded in result.provenance.get("loaded_weights") or []:
        out.info(f"loaded {loaded['summary']}")
    out.info(result.summary_table())
    if found is not None:
        out.info(found.summary_table())
    out.essential(f"wrote {output}")
    if args.html:
        from ..report.html import render_report
        from ..report.loading import report_from_probe

        write_text_atomic(args.html, render_report(report_from_probe(data)))
        out.essential(f"wrote {args.html}")
    if args.json:
        _print_json(result, found, data, config.preset, output)
    return EXIT_PASS


def _print_json(result: Any, found: Any, data: dict, preset: str, output: Path) -> None:
    """--json: the probe's headline numbers as one JSON line on stdout (NaN/inf as JSON's NaN/Infinity)."""
    from ..results import interval_record

    md, memory = result.memory_distance, result.memory
    print(json.dumps({
        "memory": interval_record(memory),
        "d_n": None if md is None else md.value, "ci_low": None if md is None else md.ci_low,
        "ci_high": None if md is None else md.ci_high, "distance_kind": None if md is None else md.kind,
        "psnr_mean": data["erased"]["summary"]["psnr_mean"], "nll_mean": data["erased"]["summary"]["nll_mean"],
        "diverged": data["erased"]["summary"]["diverged"], "notes": result.notes,
        "preset": preset, "output": str(output),
        **({} if found is None else {"multi_memory": {
            "memory": interval_record(found.memory),
            **{k: v for k, v in found.summary().items() if k != "distinct_memories"}}}),
    }, default=str))
