"""Inputs for the gate and report tests, built from the shipped small world (no network).

`image_folders(root, n)` writes concept images (renders of "a circle") and reference images (the
other shapes) as folders with prompts.csv; `world_inputs(root, ...)` writes them and a
`checkpoints/` folder holding the ESD-LoRA adapter saved at the given iterations of one short
erasure run.
"""

from __future__ import annotations

import json
from pathlib import Path

from unlearn_guard.gate.folders import save_image_folder
from unlearn_guard.trainers import ESDConfig, esd_lora_erase, save_esd_adapter
from unlearn_guard.world import load_world_model
from unlearn_guard.world.evaluate import probe_sets

# Cheap probe knobs for tests that check behaviour, not numbers: fast preset, 3 DDIM steps.
CHEAP = ["--preset", "fast", "--set", "inversion.num_steps=3", "--set", "bootstrap_samples=50",
         "--thumbnails", "2", "--quiet"]


def image_folders(root: Path, images: int = 4) -> Path:
    """root/concept (renders of "a circle") and root/reference (the other shapes), with prompts.csv."""
    E, E_prompts, R, R_prompts = probe_sets("circle", images, seed=10_000)
    save_image_folder(root / "concept", E, E_prompts, prefix="circle")
    save_image_folder(root / "reference", R, R_prompts, prefix="other")
    return root


def world_inputs(root: Path, images: int = 4, save_at: tuple[int, ...] = (10, 20), ddim_steps: int = 10) -> Path:
    image_folders(root, images)
    model = load_world_model()
    config = ESDConfig(concept="a circle", iterations=max(save_at), lr=1e-3, ddim_steps=ddim_steps, seed=0)

    def on_step(iteration: int, loss: float) -> None:
        if iteration + 1 in save_at:
            save_esd_adapter(model, root / "checkpoints" / f"checkpoint-{iteration + 1}", config=config)

    esd_lora_erase(model, config, on_step=on_step, progress=False)
    return root


def gate_args(root: Path, output: Path, *extra: str) -> list[str]:
    return ["gate", "--model", "shapes-world", "--concept-images", str(root / "concept"),
            "--reference-images", str(root / "reference"), "--output", str(output), *extra]


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    from unlearn_guard.cli import main

    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def json_line(stdout: str) -> dict:
    """--json promises exactly one JSON document on stdout."""
    lines = [line for line in stdout.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one JSON line on stdout, got {stdout!r}"
    return json.loads(lines[0])
