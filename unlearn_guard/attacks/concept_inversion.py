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

How the token enters without touching the model: the template is tokenized with a *carrier*
word (the `init_token`, one token) in the placeholder's slot, and a forward hook on the text
encoder's input-embedding layer replaces that slot's row with v* for this one call. Nothing is
added to the tokenizer, no embedding matrix is resized, every weight keeps requires_grad False
for the run (so no `.grad` lands on them) and gets its flag back afterwards: the model is left
exactly as found (tested byte for byte). The learned row is saved in diffusers' textual-inversion
format (`learned_embeds.safetensors`, {token: (1, D)}), so `pipe.load_textual_inversion(folder,
token=...)` puts the same token into a real pipeline (also tested).

One step (the diffusers textual-inversion loop, with the paper's settings as defaults where they
fit): 1. draw a batch of image indices and templates; 2. draw z0 from each image's cached VAE
posterior; 3. draw t and eps, form z_t; 4. encode the templates with v*; 5. loss, backward, one
AdamW step on v* (diffusers' betas and weight decay 1e-2). Every draw comes from one CPU generator
seeded with `config.seed`, in a fixed order, so a seeded run is reproducible.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..validation import is_int, is_number, require_field
from ..errors import InputError, NonFiniteError, NonFiniteWeightsError, OutputError
from ..io import ImageSet, load_image_set
from ..models.bundle import DiffusionModel
from ..models.checks import check_finite_weights
from ..models.module_state import preserve_module_state
from ..provenance import provenance
from ..sampling import sample_from_embeddings
from .judges import Judge, judge_images, judge_name
from .results import AttackSuccess

EMBEDDING_FILE = "learned_embeds.safetensors"  # diffusers' TEXT_INVERSION_NAME_SAFE
METADATA_FILE = "concept_inversion.json"
_ENCODE_CHUNK = 64  # images per VAE call when caching posteriors


@dataclass(frozen=True)
class ConceptInversionConfig:
    """Settings of one Concept Inversion run.

    Args:
        token: the new token's name (the key in the saved file; what a prompt writes), e.g. "<concept>".
        init_token: the word whose embedding row v* starts from; must be one token of the model's
            tokenizer. The paper starts from a generic word ("art" for styles). A word outside the
            vocabulary starts from the unknown token's row (a warning says so).
        templates: prompts with one "{}" where the token goes; drawn uniformly per image and step.
        steps: optimiser steps. The default, 300, is the small world's measured budget
            (benchmarks/concept_inversion_attack.py); the paper ran 5000 on SD 1.4: raise it for real models.
        lr: AdamW learning rate on v* (the paper: 0.005 scaled by batch 4 x accumulation 4 = 0.08 for ESD).
        batch_size: images per step (drawn with replacement from the training images).
        weight_decay: AdamW weight decay (diffusers' textual inversion default, 1e-2).
        seed: fixes every draw (batches, templates, VAE samples, timesteps, noise).
        progress: a tqdm bar over the steps, with the running loss.
    """

    token: str = "<concept>"
    init_token: str = "shape"
    templates: tuple[str, ...] = ("a {}",)
    steps: int = 300
    lr: float = 5e-3
    batch_size: int = 8
    weight_decay: float = 1e-2
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        require_field("config", isinstance(self.token, str) and self.token.strip() == self.token and self.token != ""
                 and " " not in self.token, "token", self.token, "a non-empty name without spaces, e.g. '<concept>'")
        require_field("config", isinstance(self.init_token, str) and self.init_token.strip() != "" and " " not in self.init_token.strip(),
                 "init_token", self.init_token, "one word")
        templates = (self.templates,) if isinstance(self.templates, str) else tuple(self.templates)
        require_field("config", len(templates) >= 1 and all(isinstance(t, str) and t.count("{}") == 1 for t in templates),
                 "templates", self.templates, "prompts with exactly one '{}' each, e.g. ('a {}',)")
        object.__setattr__(self, "templates", templates)
        require_field("config", is_int(self.steps) and self.steps >= 1, "steps", self.steps, "an int >= 1")
        require_field("config", is_number(self.lr) and self.lr > 0, "lr", self.lr, "a finite number > 0")
        require_field("config", is_int(self.batch_size) and self.batch_size >= 1, "batch_size", self.batch_size, "an int >= 1")
        require_field("config", is_number(self.weight_decay) and self.weight_decay >= 0, "weight_decay", self.weight_decay,
                 "a finite number >= 0")
        require_field("config", is_int(self.seed) and 0 <= self.seed < 2**63, "seed", self.seed, "an int in [0, 2**63)")

    def replace(self, **changes: Any) -> "ConceptInversionConfig":
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise InputError(f"ConceptInversionConfig has no field(s) {sorted(unknown)}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["templates"] = list(self.templates)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ConceptInversionConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise InputError(f"ConceptInversionConfig: unknown fields {sorted(unknown)}; known: {sorted(known)}")
        return cls(**{k: tuple(v) if k == "templates" else v for k, v in data.items()})


@dataclass
class LearnedEmbedding:
    """The learned token: its name, its input-embedding row v* (D,) float32 (CPU), the carrier word it
    started from, the templates it was trained with, the loss per step, seconds, config and provenance."""

    token: str
    vector: torch.Tensor
    init_token: str
    templates: tuple[str, ...] = ("a {}",)
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    config: ConceptInversionConfig | None = None
    provenance: dict[str, Any] = field(default_factory=dict)

    def prompt(self, template: str | None = None) -> str:
        """The prompt a diffusers pipeline with the token loaded would take: 'a <concept>'."""
        return (template or self.templates[0]).format(self.token)

    def to_dict(self) -> dict[str, Any]:
        """Everything but the vector (which goes to the safetensors file), plus its norm."""
        return {
            "token": self.token,
            "init_token": self.init_token,
            "templates": list(self.templates),
            "dimension": int(self.vector.numel()),
            "norm": float(self.vector.norm()),
            "final_loss": self.losses[-1] if self.losses else None,
            "mean_loss_last_10pct": (sum(self.losses[-max(1, len(self.losses) // 10):]) / max(1, len(self.losses) // 10)
                                     if self.losses else None),
            "steps_run": len(self.losses),
            "seconds": self.seconds,
            "config": None if self.config is None else self.config.to_dict(),
            "provenance": self.provenance,
        }

    def save(self, folder: str | os.PathLike) -> Path:
        """Write `folder/learned_embeds.safetensors` ({token: (1, D)}, diffusers' format, loadable with
        `pipe.load_textual_inversion(folder, token=...)`) and `folder/concept_inversion.json` (the
        rest, losses included). Both atomically; returns the folder."""
        from safetensors.torch import save as to_bytes

        path = Path(folder)
        payload = to_bytes({self.token: self.vector.detach().float().cpu().reshape(1, -1).contiguous()},
                           metadata={"format": "pt"})
        _write_bytes_atomic(path / EMBEDDING_FILE, payload)
        data = {**self.to_dict(), "losses": list(self.losses)}
        from ..files import write_text_atomic

        write_text_atomic(path / METADATA_FILE, json.dumps(data, indent=1))
        return path


def _write_bytes_atomic(target: Path, payload: bytes) -> None:
    temp = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        with os.fdopen(handle, "wb") as stream:
            stream.write(payload)
        os.replace(temp, target)
    except OSError as error:
        if temp is not None and os.path.exists(temp):
            os.unlink(temp)
        raise OutputError(f"could not write {str(target)!r}: {error.strerror or error}") from None


def load_learned_embedding(path: str | os.PathLike, token: str | None = None,
                           init_token: str | None = None) -> LearnedEmbedding:
    """Read a learned token from a folder or a `.safetensors` file in diffusers' format.

    `token` picks the key (needed when the file holds several); `init_token` names the carrier word
    when no `concept_inversion.json` sits beside the file (one written by `LearnedEmbedding.save`).
    Pickled `.bin` files are refused; a multi-vector embedding ((k, D) with k > 1) too.
    """
    from safetensors.torch import load_file

    source = Path(path)
    file = source / EMBEDDING_FILE if source.is_dir() else source
    if not file.is_file():
        raise InputError(f"embedding: {str(file)!r} does not exist; expected a folder with {EMBEDDING_FILE} or that file")
    if file.suffix != ".safetensors":
        raise InputError(f"embedding: {str(file)!r} is not a .safetensors file; pickled embeddings are not read")
    try:
        tensors = load_file(str(file))
    except Exception as error:  # noqa: BLE001 - any read failure names the file
        raise InputError(f"embedding: {str(file)!r} is not a readable safetensors file ({error})") from None
    if token is None:
        if len(tensors) != 1:
            raise InputError(f"embedding: {str(file)!r} holds {len(tensors)} tokens {sorted(tensors)}; pass token=...")
        token = next(iter(tensors))
    if token not in tensors:
        raise InputError(f"embedding: {str(file)!r} has no token {token!r}; it holds {sorted(tensors)}")
    vector = tensors[token].float()
    if vector.dim() == 2 and vector.shape[0] == 1:
        vector = vector[0]
    if vector.dim() != 1:
        raise InputError(f"embedding: token {token!r} in {str(file)!r} has shape {tuple(tensors[token].shape)}; "
                         "expected (1, D) or (D,) (multi-vector embeddings are not supported)")
    if not bool(torch.isfinite(vector).all()):
        raise NonFiniteWeightsError(f"embedding: token {token!r} in {str(file)!r} holds NaN or Inf")
    metadata: dict[str, Any] = {}
    if (file.parent / METADATA_FILE).is_file():
        metadata = json.loads((file.parent / METADATA_FILE).read_text())
    carrier = init_token or metadata.get("init_token")
    if carrier is None:
        raise InputError(f"embedding: {str(file)!r} has no {METADATA_FILE} beside it; pass init_token=... "
                         "(any word that is one token of the model's tokenizer)")
    config = ConceptInversionConfig.from_dict(metadata["config"]) if metadata.get("config") else None
    return LearnedEmbedding(token=token, vector=vector, init_token=carrier,
                            templates=tuple(metadata.get("templates") or ("a {}",)),
                            losses=list(metadata.get("losses") or []), seconds=float(metadata.get("seconds") or 0.0),
                            config=config, provenance=metadata.get("provenance") or {})


# --------------------------------------------------------------------------- the token's slot


def _token_ids(tokenizer: Any, text: str) -> list[int]:
    ids = list(tokenizer(text).input_ids)
    eos = getattr(tokenizer, "eos_token_id", None)
    return ids[:-1] if ids and ids[-1] == eos else ids


def carrier_id(tokenizer: Any, word: str, argument: str = "init_token") -> tuple[int, bool]:
    """(id, known) of `word` as exactly one token; InputError when it takes several.

    known is False when the tokenizer maps the word to its unknown token."""
    ids = list(tokenizer(word.strip(), add_special_tokens=False).input_ids)
    if len(ids) != 1:
        pieces = tokenizer.convert_ids_to_tokens(ids) if ids else []
        raise InputError(f"{argument}: {word!r} is {len(ids)} tokens {pieces} for this model's tokenizer; "
                         "expected a word that is exactly one token")
    unk = getattr(tokenizer, "unk_token_id", None)
    unk_text = getattr(tokenizer, "unk_token", None)
    return ids[0], not (unk is not None and ids[0] == unk and word.strip() != unk_text)


def template_slots(tokenizer: Any, templates: Sequence[str], carrier: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The templates tokenized with `carrier` in the placeholder's slot: (T, L) input ids padded to
    the tokenizer's length, and (T,) the slot's position in each. InputError when a template is too
    long or the carrier does not come out as its own token in it."""
    token, _ = carrier_id(tokenizer, carrier)
    length = int(tokenizer.model_max_length)
    rows, positions = [], []
    for template in templates:
        prompt = template.format(carrier)
        prefix = _token_ids(tokenizer, template.split("{}")[0].strip())
        full = list(tokenizer(prompt).input_ids)
        if len(full) > length:
            raise InputError(f"templates: {template!r} is {len(full)} tokens with the token in it; the tokenizer "
                             f"takes {length}")
        position = len(prefix)
        if position >= len(full) or full[position] != token or full[:position] != prefix:
            raise InputError(f"templates: in {template!r} the token's slot does not tokenize as its own word; "
                             "put spaces around '{}'")
        padded = tokenizer([prompt], padding="max_length", max_length=length, truncation=True,
                           return_tensors="pt").input_ids[0]
        rows.append(padded)
        positions.append(position)
    return torch.stack(rows), torch.tensor(positions, dtype=torch.long)


@contextmanager
def spliced_embedding(text_encoder: torch.nn.Module, positions: torch.Tensor, vector: torch.Tensor) -> Iterator[None]:
    """For the body: the text encoder's input-embedding layer returns `vector` at (row b, positions[b])
    of its output, every other entry as computed. Gradients flow into `vector`. Removed on exit."""
    layer = text_encoder.get_input_embeddings()

    def splice(module: torch.nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
        rows = torch.arange(output.shape[0], device=output.device)
        spliced = output.clone()
        spliced[rows, positions.to(output.device)] = vector.to(output.device, output.dtype)
        return spliced

    handle = layer.register_forward_hook(splice)
    try:
        yield
    finally:
        handle.remove()


def encode_with_token(model: DiffusionModel, input_ids: torch.Tensor, positions: torch.Tensor,
                      vector: torch.Tensor) -> torch.Tensor:
    """Text embeddings c (B, L, D_text) of token rows `input_ids` (B, L) with `vector` at `positions` (B,)."""
    with spliced_embedding(model.text_encoder, positions, vector):
        hidden = model.text_encoder(input_ids.to(model.device))[0]
    return hidden.to(model.dtype)


def _check_dimension(model: DiffusionModel, vector: torch.Tensor, what: str) -> None:
    expected = int(model.text_encoder.get_input_embeddings().weight.shape[-1])
    if vector.dim() != 1 or vector.numel() != expected:
        raise InputError(f"{what}: the token's vector has shape {tuple(vector.shape)}; this model's text encoder "
                         f"takes ({expected},)")


def _alphas_cumprod(scheduler_config: dict[str, Any]) -> torch.Tensor:
    """abar_t for t = 0..T-1 from the model's own scheduler config (SPEC 1), float64."""
    import inspect

    from diffusers import DDIMScheduler

    config = {k: v for k, v in scheduler_config.items() if not k.startswith("_")}
    known = set(inspect.signature(DDIMScheduler.__init__).parameters)
    return DDIMScheduler(**{k: v for k, v in config.items() if k in known}).alphas_cumprod.to(torch.float64)


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
    abar = _alphas_cumprod(model.scheduler_config).to(model.device)  # (T_train,)
    generator = torch.Generator().manual_seed(config.seed)
    started = time.perf_counter()
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
    learned = vector.detach().float().cpu()
    if not bool(torch.isfinite(learned).all()):
        raise NonFiniteError(f"concept inversion: the learned vector holds NaN or Inf after {config.steps} steps")
    return LearnedEmbedding(
        token=config.token, vector=learned, init_token=config.init_token, templates=config.templates, losses=losses,
        seconds=time.perf_counter() - started, config=config,
        provenance={**provenance(model.device, model.dtype, seed=config.seed, model_source=model.source),
                    "training_images": [{"name": n, "sha256": h} for n, h in zip(training.names, training.sha256)],
                    "init_token_known": known},
    )


def _success(model: DiffusionModel, cond: torch.Tensor, judge: Judge, prompt: str, n: int, seed: int, num_steps: int,
             guidance_scale: float, batch_size: int, confidence: float, keep_images: bool) -> AttackSuccess:
    from ..stats.proportion import wilson_interval

    started = time.perf_counter()
    uncond = model.encode_prompts([""]).expand(n, -1, -1)
    images = sample_from_embeddings(model, cond, uncond, [seed + i for i in range(n)], num_steps, guidance_scale,
                                    batch_size)  # (n, 3, H, W) in [0, 1]
    verdicts = judge_images(judge, images)
    successes = int(verdicts.sum())
    low, high = wilson_interval(successes, n, confidence)
    return AttackSuccess(prompt=prompt, successes=successes, n=n, rate=successes / n, ci_low=low, ci_high=high,
                         confidence=confidence, judge=judge_name(judge), verdicts=[bool(v) for v in verdicts],
                         seconds=time.perf_counter() - started, images=images if keep_images else None)


def _check_generation(n: int, seed: int, num_steps: int, guidance_scale: float, batch_size: int, confidence: float) -> None:
    for name, value, ok, expected in (
        ("n", n, is_int(n) and n >= 1, "an int >= 1 (generations)"),
        ("seed", seed, is_int(seed) and 0 <= seed < 2**62, "an int >= 0"),
        ("num_steps", num_steps, is_int(num_steps) and num_steps >= 1, "an int >= 1"),
        ("guidance_scale", guidance_scale, is_number(guidance_scale) and guidance_scale >= 1, "a number >= 1"),
        ("batch_size", batch_size, is_int(batch_size) and batch_size >= 1, "an int >= 1"),
        ("confidence", confidence, is_number(confidence) and 0 < confidence < 1, "a number in (0, 1)"),
    ):
        if not ok:
            raise InputError(f"{name}: got {value!r}; expected {expected}")


def attack_success(
    model: Any,
    embedding: LearnedEmbedding,
    judge: Judge,
    n: int = 32,
    *,
    template: str | None = None,
    seed: int = 0,
    num_steps: int = 25,
    guidance_scale: float = 4.0,
    batch_size: int = 64,
    confidence: float = 0.95,
    keep_images: bool = True,
) -> AttackSuccess:
    """Generate `n` images with the learned token and count the ones `judge` calls the concept.

    Args:
        model: the model under attack (any form `probe` takes); left as found.
        embedding: a `LearnedEmbedding` (from `concept_inversion` or `load_learned_embedding`).
        judge: images (N, 3, H, W) in [0, 1] -> N booleans; `ShapeJudge("circle")` in the small world.
        n: generations; image i starts from the seed `seed + i` (as the small world's `generate`).
        template: the prompt around the token (default: the embedding's first template, "a {}").
        num_steps / guidance_scale / batch_size: DDIM sampling with CFG, as `generate`.
        confidence: of the Wilson interval around the success rate.
    Returns:
        AttackSuccess: successes, n, rate, Wilson interval, per-image verdicts, the images.
    """
    from ..probe import as_model

    model = as_model(model)
    if not isinstance(embedding, LearnedEmbedding):
        raise InputError(f"embedding: got {type(embedding).__name__}; expected a LearnedEmbedding "
                         "(concept_inversion(...) or load_learned_embedding(folder))")
    _check_generation(n, seed, num_steps, guidance_scale, batch_size, confidence)
    if not callable(judge):
        raise InputError(f"judge: got {type(judge).__name__}; expected a callable images -> one bool per image")
    _check_dimension(model, embedding.vector, "embedding")
    template = template or embedding.templates[0]
    if not isinstance(template, str) or template.count("{}") != 1:
        raise InputError(f"template: got {template!r}; expected a prompt with exactly one '{{}}'")
    slots, positions = template_slots(model.tokenizer, [template], embedding.init_token)
    with preserve_module_state(*model.modules()), torch.no_grad():
        cond = encode_with_token(model, slots.expand(n, -1), positions.expand(n),
                                 embedding.vector.to(model.device))  # (n, L, D)
        return _success(model, cond, judge, embedding.prompt(template), n, seed, num_steps, guidance_scale,
                        batch_size, confidence, keep_images)


def prompt_success(
    model: Any,
    prompts: str | Sequence[str],
    judge: Judge,
    n: int = 32,
    *,
    seed: int = 0,
    num_steps: int = 25,
    guidance_scale: float = 4.0,
    batch_size: int = 64,
    confidence: float = 0.95,
    keep_images: bool = False,
) -> AttackSuccess:
    """The same count for plain prompts (cycled to `n`): the baseline the attack is read against,
    e.g. the classifier accuracy of "a circle" on an erased model."""
    from ..probe import as_model

    model = as_model(model)
    _check_generation(n, seed, num_steps, guidance_scale, batch_size, confidence)
    listed = [prompts] if isinstance(prompts, str) else list(prompts)
    if not listed or not all(isinstance(p, str) for p in listed):
        raise InputError(f"prompts: got {prompts!r}; expected a prompt or a non-empty list of prompts")
    cycled = [listed[i % len(listed)] for i in range(n)]
    with preserve_module_state(*model.modules()), torch.no_grad():
        cond = torch.cat([model.encode_prompts(cycled[s : s + batch_size]) for s in range(0, n, batch_size)])
        label = listed[0] if len(listed) == 1 else f"{len(listed)} prompts, e.g. {listed[0]!r}"
        return _success(model, cond, judge, label, n, seed, num_steps, guidance_scale, batch_size, confidence,
                        keep_images)


__all__ = [
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
