"""Train the small world's text-to-image model and concept classifier, reproducibly, on a CPU.

    unlearn-guard train-world --output unlearn_guard/world/weights   # the shipped weights
    unlearn-guard train-world --exclude circle --output unlearn_guard/world/weights/without-circle

`--exclude SHAPE` is exact unlearning, the ground truth every erasure is measured against: the
same seed, config, dataset draw and step counts, with every scene of that shape (image and
caption) dropped before training, so the VAE and the UNet never see it. The classifier stays
the judge trained on all shapes: it is copied from the full world (`classifier_from`), not retrained.

Stages (each seeded): render scenes -> train the VAE (MSE + small KL) -> measure the latent
scale -> train the UNet on VAE posterior samples with the denoising objective, caption
variants and 10% caption dropout (so CFG works), keeping an EMA of its weights -> train the
shape classifier -> evaluate (classifier accuracy on held-out renders and on generated images
from "a <shape>", reconstruction PSNR through the VAE) -> save the pipeline with
`save_pretrained` (safetensors), the classifier and `training.json`.
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..models.bundle import DiffusionModel
from ..provenance import git_commit, package_versions
from .classifier import concept_accuracy, train_classifier
from .generate import generate
from .model import assemble_pipeline, build_text_encoder, build_unet, build_vae, build_word_tokenizer
from .shapes import SHAPES, caption_variant, concept_prompt, make_dataset

PIPELINE_FOLDER = "pipeline"
CLASSIFIER_FILE = "classifier.safetensors"
REPORT_FILE = "training.json"


@dataclass(frozen=True)
class WorldTrainingConfig:
    seed: int = 0
    dataset_size: int = 24000
    vae_steps: int = 1500
    vae_batch: int = 32
    vae_lr: float = 2e-3
    vae_kl_weight: float = 1e-6
    unet_steps: int = 4000
    unet_batch: int = 64
    unet_lr: float = 1e-3
    caption_dropout: float = 0.1
    ema_decay: float = 0.999
    classifier_steps: int = 400
    eval_images_per_concept: int = 16
    threads: int = 2
    exclude: str | None = None
    # What the UNet learns to predict: "epsilon" (SD 1.x, the shipped worlds) or "v_prediction" (SD 2.x 768)
    prediction_type: str = "epsilon"

    def __post_init__(self) -> None:
        from ..errors import InputError
        from ..schedule import PREDICTION_TYPES

        if self.exclude is not None and self.exclude not in SHAPES:
            raise InputError(f"exclude: got {self.exclude!r}; expected one of {SHAPES}")
        if self.prediction_type not in PREDICTION_TYPES:
            raise InputError(f"prediction_type: got {self.prediction_type!r}; expected one of {PREDICTION_TYPES}")


def _cosine_lr(step: int, total: int, base: float, warmup: int = 100) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(total - warmup, 1))))


def train_vae(vae, pixels: torch.Tensor, config: WorldTrainingConfig, progress: bool) -> list[float]:
    generator = torch.Generator().manual_seed(config.seed + 11)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=config.vae_lr)
    vae.train()
    losses = []
    for step in tqdm(range(config.vae_steps), desc="VAE", disable=not progress):
        for group in optimizer.param_groups:
            group["lr"] = _cosine_lr(step, config.vae_steps, config.vae_lr)
        index = torch.randint(0, len(pixels), (config.vae_batch,), generator=generator)
        x = pixels[index].float() / 127.5 - 1  # (b, 3, 32, 32) in [-1, 1]
        posterior = vae.encode(x).latent_dist
        noise = torch.randn(posterior.mean.shape, generator=generator)
        recon = vae.decode(posterior.mean + posterior.std * noise).sample
        loss = F.mse_loss(recon, x) + config.vae_kl_weight * posterior.kl().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


@torch.no_grad()
def encode_dataset(vae, pixels: torch.Tensor, batch: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior means and stds (N, 4, 8, 8) of the whole dataset (unscaled)."""
    vae.eval()
    means, stds = [], []
    for start in range(0, len(pixels), batch):
        posterior = vae.encode(pixels[start : start + batch].float() / 127.5 - 1).latent_dist
        means.append(posterior.mean)
        stds.append(posterior.std)
    return torch.cat(means), torch.cat(stds)


def train_unet(unet, text_encoder, tokenizer, means, stds, scenes, scaling_factor, scheduler, config, progress):
    """Denoising objective on scaling_factor * posterior samples; returns (EMA UNet, losses). The
    target is the noise, or for `config.prediction_type` "v_prediction" the scheduler's velocity
    (`get_velocity`), for "sample" the clean latent. `unet` may be a trained one (fine-tuning)."""
    generator = torch.Generator().manual_seed(config.seed + 22)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=config.unet_lr, weight_decay=1e-4)
    ema = copy.deepcopy(unet).eval().requires_grad_(False)
    alphas = scheduler.alphas_cumprod  # (1000,) from SD 1.4's schedule
    unet.train()
    losses = []
    for step in tqdm(range(config.unet_steps), desc="UNet", disable=not progress):
        for group in optimizer.param_groups:
            group["lr"] = _cosine_lr(step, config.unet_steps, config.unet_lr)
        index = torch.randint(0, len(means), (config.unet_batch,), generator=generator)
        variants = torch.randint(0, 4, (config.unet_batch,), generator=generator).tolist()
        dropped = (torch.rand(config.unet_batch, generator=generator) < config.caption_dropout).tolist()
        captions = ["" if drop else caption_variant(scenes[i], v) for i, v, drop in zip(index.tolist(), variants, dropped)]
        with torch.no_grad():
            tokens = tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length,
                               truncation=True, return_tensors="pt")
            context = text_encoder(tokens.input_ids)[0]
        eps_z = torch.randn(means[index].shape, generator=generator)
        z0 = (means[index] + stds[index] * eps_z) * scaling_factor
        t = torch.randint(0, len(alphas), (config.unet_batch,), generator=generator)
        noise = torch.randn(z0.shape, generator=generator)
        a = alphas[t].view(-1, 1, 1, 1)
        z_t = a.sqrt() * z0 + (1 - a).sqrt() * noise
        target = {"epsilon": noise, "sample": z0}.get(config.prediction_type)
        if target is None:
            target = scheduler.get_velocity(z0, noise, t)
        loss = F.mse_loss(unet(z_t, t, encoder_hidden_states=context).sample, target)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        optimizer.step()
        with torch.no_grad():
            decay = min(config.ema_decay, (1 + step) / (10 + step))
            for p_ema, p in zip(ema.parameters(), unet.parameters()):
                p_ema.lerp_(p, 1 - decay)
        losses.append(loss.item())
    return ema, losses


def evaluate_world(model: DiffusionModel, classifier, config: WorldTrainingConfig, seed: int) -> dict:
    """Classifier accuracy of generated images per concept prompt, and VAE reconstruction PSNR."""
    per_concept = {}
    for k, shape in enumerate(SHAPES):
        images = generate(model, [concept_prompt(shape)] * config.eval_images_per_concept, seed=seed + 1000 * k)
        per_concept[shape] = concept_accuracy(classifier, images, shape)
    pixels, _, _ = make_dataset(256, seed + 5)
    with torch.no_grad():
        x = pixels.float() / 127.5 - 1
        recon = model.vae.decode(model.vae.encode(x).latent_dist.mean).sample.clamp(-1, 1)
        mse = ((recon - x) / 2).pow(2).flatten(1).mean(1)
    return {
        "generated_concept_accuracy": per_concept,
        "generated_concept_accuracy_mean": sum(per_concept.values()) / len(per_concept),
        "vae_psnr_mean": float((10 * torch.log10(1 / mse)).mean()),
    }


def retain_set(pixels: torch.Tensor, scenes: list, exclude: str | None) -> tuple[torch.Tensor, list]:
    """The training data without any scene of `exclude` (image and caption); all of it for None."""
    if exclude is None:
        return pixels, scenes
    keep = [i for i, scene in enumerate(scenes) if scene.shape != exclude]
    return pixels[keep], [scenes[i] for i in keep]


def train_world(
    output: str | Path,
    config: WorldTrainingConfig = WorldTrainingConfig(),
    progress: bool = True,
    classifier_from: str | Path | None = None,
) -> dict:
    """Train everything and write it under `output`; returns the training report.

    With `config.exclude`, the classifier is copied from `classifier_from` (default: the shipped
    world's weights folder) instead of trained, so every world is judged by the same classifier.
    """
    from safetensors.torch import save_file

    torch.set_num_threads(config.threads)
    commit = git_commit()  # the code that trains, not whatever HEAD is when the run ends
    timings = {}
    started = time.perf_counter()
    all_pixels, all_scenes, _ = make_dataset(config.dataset_size, config.seed)
    pixels, scenes = retain_set(all_pixels, all_scenes, config.exclude)
    timings["dataset_s"] = time.perf_counter() - started

    tokenizer = build_word_tokenizer()
    text_encoder = build_text_encoder(tokenizer, config.seed + 1)
    vae = build_vae(config.seed + 2)
    t0 = time.perf_counter()
    vae_losses = train_vae(vae, pixels, config, progress)
    timings["vae_s"] = time.perf_counter() - t0

    means, stds = encode_dataset(vae, pixels)
    scaling_factor = float(1.0 / means.std())  # unit-variance latents, as SD's 0.18215 does for SD
    vae.register_to_config(scaling_factor=scaling_factor)

    unet = build_unet(config.seed + 3)
    pipe = assemble_pipeline(unet, vae, text_encoder, tokenizer)
    pipe.scheduler.register_to_config(prediction_type=config.prediction_type)
    t0 = time.perf_counter()
    ema_unet, unet_losses = train_unet(unet, text_encoder, tokenizer, means, stds, scenes, scaling_factor,
                                       pipe.scheduler, config, progress)
    timings["unet_s"] = time.perf_counter() - t0
    pipe.register_modules(unet=ema_unet)

    t0 = time.perf_counter()
    if config.exclude is None:
        labels = torch.tensor([scene.shape_index for scene in scenes])
        classifier, classifier_losses = train_classifier(pixels, labels, config.classifier_steps, config.seed + 4)
        classifier_source = "trained"
    else:
        from . import load_classifier

        classifier, classifier_losses = load_classifier(classifier_from), []
        classifier_source = f"copied from {classifier_from or 'the shipped world'} (trained on all shapes)"
    held_pixels, held_scenes, _ = make_dataset(3000, config.seed + 99)
    held_labels = torch.tensor([s.shape_index for s in held_scenes])
    held_accuracy = float((classifier.predict(held_pixels.float() / 255) == held_labels).float().mean())
    timings["classifier_s"] = time.perf_counter() - t0

    for module in (vae, ema_unet, text_encoder):
        module.eval()
    model = DiffusionModel.from_pipeline(pipe, source="shapes world")
    t0 = time.perf_counter()
    evaluation = evaluate_world(model, classifier, config, seed=config.seed + 7)
    timings["evaluation_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - started

    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(out / PIPELINE_FOLDER, safe_serialization=True)
    save_file({k: v.contiguous() for k, v in classifier.state_dict().items()}, str(out / CLASSIFIER_FILE))
    report = {
        "config": asdict(config),
        "excluded_shape": config.exclude,
        "training_images": len(scenes),
        "training_images_drawn": len(all_scenes),
        "classifier_source": classifier_source,
        "scaling_factor": scaling_factor,
        "classifier_heldout_accuracy": held_accuracy,
        "classifier_heldout_images": len(held_labels),
        **evaluation,
        "final_losses": {
            "vae": sum(vae_losses[-100:]) / 100,
            "unet": sum(unet_losses[-200:]) / 200,
            "classifier": sum(classifier_losses[-50:]) / 50 if classifier_losses else None,
        },
        "parameters": {
            "unet": sum(p.numel() for p in ema_unet.parameters()),
            "vae": sum(p.numel() for p in vae.parameters()),
            "text_encoder": sum(p.numel() for p in text_encoder.parameters()),
            "classifier": sum(p.numel() for p in classifier.parameters()),
        },
        "timings": timings,
        "threads": torch.get_num_threads(),
        "versions": package_versions(),
        "git_commit": commit,
    }
    (out / REPORT_FILE).write_text(json.dumps(report, indent=2))
    return report
