"""Concept Inversion (Pham et al., ICLR 2024; SPEC 7): textual inversion against an erased model.

Erasure methods that fine-tune the UNet (ESD, FMN, ...) stop a *word* from summoning the concept;
Concept Inversion asks whether some *other* input embedding still does. It learns one new token's
input embedding v* on images of the concept with the standard denoising loss, the UNet, VAE and
text encoder frozen, then generates with the token and lets a judge count the concept.

Notation (SPEC 7 -> code):
    v* (the new row)        `vector`, (D,) float32, the only trained tensor
    z0                      scaling_factor * VAE posterior sample of a training image (one draw per use)
    t, eps                  timestep ~ U{0, ..., T-1} and noise ~ N(0, I), per image and step
    abar_t                  alphas_cumprod[t] from the model's own scheduler config (SPEC 1)
    c(prompt with token)    text encoder output of a template ("a {}") with v* at the token's slot
    loss                    mean ||eps - eps_theta(sqrt(abar_t) z0 + sqrt(1 - abar_t) eps, t, c)||^2

The token enters without touching the model (`token_slot`: a carrier word's slot, replaced by
v* through a forward hook). Every weight keeps requires_grad False for the run (so no `.grad`
lands on them) and gets its flag back afterwards: the model is left exactly as found (tested byte
for byte). The learned token and its files are `learned_embedding` (diffusers' textual-inversion
format, so `pipe.load_textual_inversion(folder, token=...)` takes it; also tested); the settings
are `concept_config`; generating and judging with the token is `concept_success`.

One step (the diffusers textual-inversion loop, with the paper's settings as defaults where they
fit): 1. draw a batch of image indices and templates; 2. draw z0 from each image's cached VAE
posterior; 3. draw t and eps, form z_t; 4. encode the templates with v*; 5. loss, backward, one
AdamW step on v* (diffusers' betas and weight decay 1e-2). Every draw comes from one CPU generator
seeded with `config.seed`, in a fixed order, so a seeded run is reproducible.
"""

from __future__ import annotations

import math
import time
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..errors import InputError, NonFiniteError
from ..schedule import alphas_cumprod
from ..io import ImageSet, load_image_set
from ..models.bundle import DiffusionModel
from ..models.checks import check_finite_weights
from ..models.module_state import preserve_module_state
from ..provenance import model_provenance, provenance
from .concept_config import ConceptInversionConfig
from .concept_success import attack_success, prompt_success
from .learned_embedding import EMBEDDING_FILE, METADATA_FILE, LearnedEmbedding, load_learned_embedding
from .token_slot import carrier_id, encode_with_token, refuse_two_text_encoders, spliced_embedding, template_slots

_ENCODE_CHUNK = 64  # images per VAE call when caching posteriors


@torch.no_grad()
def _posteriors(model: DiffusionModel, images: ImageSet) -> tuple[torch.Tensor, torch.Tensor]:
    """Each training image's VAE posterior (mean, std), (N, C, h, w) float32 on the model's device."""
    means, stds = [], []
    for start in range(0, len(images), _ENCODE_CHUNK):
        pixels = images.pixels[start : start + _ENCODE_CHUNK].to(model.device, model.vae.dtype)
        posterior = model.vae.encode(pixels).latent_dist
        means.append(posterior.mean.float())
        stds.append(posterior.std.float())
    return torch.cat(means), torch.cat(stds)


def _learn_vector(model: DiffusionModel, training: ImageSet, config: ConceptInversionConfig, slots: torch.Tensor,
                  slot_positions: torch.Tensor, init_id: int, abar: torch.Tensor,
                  generator: torch.Generator) -> tuple[torch.Tensor, list[float]]:
    """Steps 1-5 of every optimiser step on v* (the model frozen, restored on exit): v* (D,) and the loss per step."""
    losses: list[float] = []
    unet = model.unet
    with preserve_module_state(*model.modules()):
        for module in model.modules():
            module.requires_grad_(False)  # no .grad lands on the model; flags come back on exit
        mean, std = _posteriors(model, training)  # (N, C, h, w)
        embeddings = model.text_encoder.get_input_embeddings().weight
        vector = torch.nn.Parameter(embeddings[init_id].detach().float().clone())  # (D,)
        optimizer = torch.optim.AdamW([vector], lr=config.lr, betas=(0.9, 0.999), weight_decay=config.weight_decay,
                                      eps=1e-8)
        count, batch = len(training), config.batch_size
        with torch.enable_grad(), tqdm(total=config.steps, desc="concept inversion", unit="step",
                                       disable=not config.progress, leave=False) as bar:
            for step in range(config.steps):
                # 1. images and templates; 2. z0 from the cached posterior; 3. t and eps (one generator, fixed order)
                index = torch.randint(0, count, (batch,), generator=generator)
                template = torch.randint(0, len(config.templates), (batch,), generator=generator)
                sample = torch.randn((batch, *mean.shape[1:]), generator=generator).to(model.device)
                timesteps = torch.randint(0, abar.numel(), (batch,), generator=generator)
                noise = torch.randn((batch, *mean.shape[1:]), generator=generator).to(model.device)
                index_d, timesteps_d = index.to(model.device), timesteps.to(model.device)
                z0 = (mean[index_d] + std[index_d] * sample) * model.scaling_factor  # (B, C, h, w)
                a = abar[timesteps_d].float().view(-1, 1, 1, 1)
                noisy = a.sqrt() * z0 + (1 - a).sqrt() * noise
                # 4. the templates' embeddings with v* in the token's slot
                cond = encode_with_token(model, slots[template], slot_positions[template], vector)
                # 5. the denoising loss and one step on v*
                predicted = unet(noisy.to(model.dtype), timesteps_d, encoder_hidden_states=cond)
                predicted = (predicted.sample if hasattr(predicted, "sample") else predicted[0]).float()
                predicted = model.epsilon(predicted, noisy, timesteps_d)  # eps whatever the UNet predicts (SPEC 1.1)
                loss = F.mse_loss(predicted, noise)
                value = float(loss.detach())
                if not math.isfinite(value):
                    raise NonFiniteError(f"concept inversion: the loss is {value} at step {step + 1}/{config.steps} "
                                         f"(lr={config.lr}); try a lower lr")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                losses.append(value)
                bar.update(1)
                if step % 10 == 0:
                    bar.set_postfix(loss=f"{value:.4f}")
    return vector, losses


# --------------------------------------------------------------------------- the attack


def concept_inversion(
    model: Any,
    images: Any,
    config: ConceptInversionConfig | None = None,
    **overrides: Any,
) -> LearnedEmbedding:
    """Learn a token whose embedding makes `model` draw the concept of `images` (SPEC 7).

    Args:
        model: a `DiffusionModel`, a diffusers Stable Diffusion pipeline, or a hub id / local folder
            (the erased model under attack; left exactly as found).
        images: images of the concept, in any form `probe` takes (tensor (N, 3, H, W) in [0, 1],
            PIL images, a folder, a list of files); brought to the model's resolution as `probe` does.
        config: a `ConceptInversionConfig`; `**overrides` replace its fields (steps=300, lr=1e-2,
            init_token="art", seed=1, ...).
    Returns:
        LearnedEmbedding (token, vector (D,), losses); `.save(folder)` writes diffusers' format.
    """
    from ..probe import as_model

    config = (config or ConceptInversionConfig()).replace(**overrides) if overrides else (config or ConceptInversionConfig())
    if not isinstance(config, ConceptInversionConfig):
        raise InputError(f"config: got {type(config).__name__}; expected a ConceptInversionConfig")
    # 0. check everything before any compute
    model = as_model(model)
    model.check()
    refuse_two_text_encoders(model, "Concept Inversion")
    check_finite_weights(model)
    training = load_image_set(images, "", resolution=model.resolution, label="images")
    tokenizer = model.tokenizer
    if config.token in tokenizer.get_vocab():
        raise InputError(f"token: {config.token!r} is already in the tokenizer's vocabulary; choose a new name "
                         "(diffusers' load_textual_inversion refuses a token the tokenizer has)")
    _, known = carrier_id(tokenizer, config.init_token)
    if not known:
        warnings.warn(f"init_token {config.init_token!r} is not in the tokenizer's vocabulary: the token starts "
                      f"from the unknown token's embedding", UserWarning, stacklevel=2)
    slots, slot_positions = template_slots(tokenizer, config.templates, config.init_token)  # (T, L), (T,)
    init_id, _ = carrier_id(tokenizer, config.init_token)
    abar = alphas_cumprod(model.scheduler_config).to(model.device)  # (T_train,)
    generator = torch.Generator().manual_seed(config.seed)
    started = time.perf_counter()
    vector, losses = _learn_vector(model, training, config, slots, slot_positions, init_id, abar, generator)
    learned = vector.detach().float().cpu()
    if not bool(torch.isfinite(learned).all()):
        raise NonFiniteError(f"concept inversion: the learned vector holds NaN or Inf after {config.steps} steps")
    return LearnedEmbedding(
        token=config.token, vector=learned, init_token=config.init_token, templates=config.templates, losses=losses,
        seconds=time.perf_counter() - started, config=config,
        provenance={**provenance(model.device, model.dtype, seed=config.seed, **model_provenance(model)),
                    "training_images": [{"name": n, "sha256": h} for n, h in zip(training.names, training.sha256)],
                    "init_token_known": known},
    )


__all__ = [  # the run's parts: concept_config, token_slot, learned_embedding, concept_success
    "EMBEDDING_FILE",
    "METADATA_FILE",
    "ConceptInversionConfig",
    "LearnedEmbedding",
    "attack_success",
    "carrier_id",
    "concept_inversion",
    "encode_with_token",
    "load_learned_embedding",
    "prompt_success",
    "spliced_embedding",
    "template_slots",
]
