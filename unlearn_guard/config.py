"""Frozen dataclass configs for ReNoise inversion and the probe, with presets and JSON round trip.

Presets (SPEC 2 and SPEC 5, docs/spec.md); "UNet evaluations" count samples (a batch of B counts B):
  - `mofc`: reproduces the released "Memories of Forgotten Concepts" code: 50 DDIM steps, K=5
    renoise iterations, averaging window (0, 5) for t < 250 and (8, 10) otherwise (unreachable
    with K=5, so 37 of 50 steps neither average nor regularise), noise regularisation with
    lambda_kl=0.065 and lambda_ac=20, VAE posterior *sample*, conditional eps without CFG,
    Gaussian squared-W2 distance, 8-bit quantised PSNR. 300 UNet evaluations for the inversion
    + 50 for the reconstruction = 350 per image.
  - `fast`: 10 DDIM steps, K=1 with a reachable window (0, 2) on every step (so every step
    averages and regularises), otherwise as `mofc`. 3 evaluations per inversion step (the KL
    target batched into the first call) + 10 for the reconstruction = 40 per image. How well
    its memory score ranks the calibration models like `mofc`'s is measured by
    benchmarks/calibrate_memory_signal.py (numbers in benchmarks/RESULTS.md and docs/memory-score.md).
  - `track`: the monitor's default. Plain DDIM inversion (K=0, no averaging, no regularisation),
    20 steps: 20 + 20 = 40 UNet evaluations per image, as `fast`, about 9x fewer than `mofc`.
    The cheapest preset whose memory score ranks the calibration models like `mofc`'s with
    Spearman rho >= 0.9 on both the tune and the held-out split (benchmarks/RESULTS.md). Use it
    to watch a run; gate with `mofc`.
  - `ddim`: plain DDIM inversion (K=0, no averaging, no regularisation), 50 steps: 100 per image.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from .errors import InputError
from .validation import is_int, is_number, require_field, require_known_fields

Z0Mode = Literal["sample", "mean"]
DistanceKind = Literal["mofc", "w1"]
ResizePolicy = Literal["error", "resize", "center_crop"]
PresetName = Literal["mofc", "fast", "track", "ddim", "custom"]
BackendName = Literal["auto", "triton", "torch"]
RngMode = Literal["per_image", "released"]

# The released MoFC code seeds a fresh generator with 42 for every image, and the golden N set
# (shared/parity) was drawn from manual_seed(0).
RELEASED_IMAGE_SEED = 42
RELEASED_NORMAL_SEED = 0
# The memory score's typical band, |NLL - mu_N| <= k s_N (benchmarks/calibrate_memory_signal.py, RESULTS.md).
DEFAULT_TYPICAL_SIGMAS = 6.0
# Images in the negative control (each inverted with two prompts; `unlearn_guard.controls`).
DEFAULT_CONTROL_IMAGES = 4


@dataclass(frozen=True)
class RegularizationConfig:
    """Noise regularisation of ReNoise (SPEC 2.5): PatchKL pull toward eps_opt + autocorrelation.

    Each call runs `num_reg_steps` outer steps; each outer step does one clipped KL gradient
    step and `num_ac_rolls` autocorrelation steps of size lambda_ac / num_ac_rolls.

    `ac_reference_size`: lambda_ac is the released step for latents of this many positions per
    channel (64 x 64 = 4096, SD 1.x, where the released code runs) and is scaled by h*w / 4096
    elsewhere, so each value moves as far per step at every latent size. The AC loss is a mean
    over h*w values, so its gradient shrinks as 1 / (h*w); unscaled, a roll r = 0 (a variance
    penalty) multiplies a channel by 1 - mean(e^2) / 2 per roll on 8 x 8 latents (by
    1 - mean(e^2) / 128 on 64 x 64): a unit-variance channel is wiped to zero, the PatchKL
    gradient of a zero-variance patch then hits its clip (a step of 0.065 * 100 = 6.5 per value),
    and the next AC steps overshoot geometrically to Inf (measured on the shipped world).
    At 64 x 64 the scale is exactly 1 (the released numbers); None turns the scaling off.
    """

    enabled: bool = True
    lambda_kl: float = 0.065
    lambda_ac: float = 20.0
    num_reg_steps: int = 4
    num_ac_rolls: int = 5
    kl_grad_clip: float = 100.0
    patch_size: int = 4
    ac_reference_size: int | None = 4096

    def __post_init__(self) -> None:
        require_field("config", self.lambda_kl >= 0, "lambda_kl", self.lambda_kl, "a number >= 0")
        require_field("config", self.lambda_ac >= 0, "lambda_ac", self.lambda_ac, "a number >= 0")
        require_field("config", self.num_reg_steps >= 0, "num_reg_steps", self.num_reg_steps, "an int >= 0")
        require_field("config", self.num_ac_rolls >= 1, "num_ac_rolls", self.num_ac_rolls, "an int >= 1")
        require_field("config", self.kl_grad_clip > 0, "kl_grad_clip", self.kl_grad_clip, "a number > 0")
        require_field("config", self.patch_size >= 2, "patch_size", self.patch_size, "an int >= 2")
        require_field("config", self.ac_reference_size is None or (isinstance(self.ac_reference_size, int) and self.ac_reference_size >= 1),
                 "ac_reference_size", self.ac_reference_size, "None or an int >= 1 (latent positions per channel)")

    def lambda_ac_for(self, height: int, width: int) -> float:
        """The AC step for h x w latents: lambda_ac * h * w / ac_reference_size (see the class doc)."""
        if self.ac_reference_size is None:
            return self.lambda_ac
        return self.lambda_ac * (height * width / self.ac_reference_size)


@dataclass(frozen=True)
class InversionConfig:
    """ReNoise inversion (SPEC 2). K=0 with regularisation off is plain DDIM inversion.

    Args:
        num_steps: DDIM steps; timesteps come from the model's scheduler config.
        renoise_steps: K; each step evaluates the UNet K+1 times (k = 0..K).
        early_window: averaging window [start, stop) for steps with t < window_split_timestep.
        late_window: averaging window for the other steps.
        guidance_scale: 1.0 means the conditional eps only (no CFG); w > 1 uses
            eps_u + w (eps_c - eps_u) during inversion and for eps_opt.
        reconstruction_guidance_scale: CFG scale of the DDIM reconstruction (1.0 in mofc, SPEC 3).
        z0_mode: VAE posterior `sample` (mofc) or `mean`.
    """

    num_steps: int = 50
    renoise_steps: int = 5
    early_window: tuple[int, int] = (0, 5)
    late_window: tuple[int, int] = (8, 10)
    window_split_timestep: int = 250
    guidance_scale: float = 1.0
    reconstruction_guidance_scale: float = 1.0
    z0_mode: Z0Mode = "sample"
    regularization: RegularizationConfig = field(default_factory=RegularizationConfig)

    def __post_init__(self) -> None:
        require_field("config", self.num_steps >= 1, "num_steps", self.num_steps, "an int >= 1")
        require_field("config", self.renoise_steps >= 0, "renoise_steps", self.renoise_steps, "an int >= 0")
        for name in ("early_window", "late_window"):
            window = tuple(getattr(self, name))
            require_field("config", 
                len(window) == 2 and 0 <= window[0] <= window[1],
                name,
                window,
                "(start, stop) with 0 <= start <= stop",
            )
            object.__setattr__(self, name, (int(window[0]), int(window[1])))
        require_field("config", self.guidance_scale >= 1.0, "guidance_scale", self.guidance_scale, ">= 1.0 (1.0 = no CFG)")
        require_field("config", 
            self.reconstruction_guidance_scale >= 1.0,
            "reconstruction_guidance_scale",
            self.reconstruction_guidance_scale,
            ">= 1.0 (1.0 = no CFG)",
        )
        require_field("config", self.z0_mode in ("sample", "mean"), "z0_mode", self.z0_mode, "'sample' or 'mean'")
        if isinstance(self.regularization, dict):
            object.__setattr__(self, "regularization", RegularizationConfig(**self.regularization))

    def window_for(self, timestep: int) -> tuple[int, int]:
        """The averaging window for one inversion timestep (SPEC 2.4)."""
        return self.early_window if timestep < self.window_split_timestep else self.late_window


@dataclass(frozen=True)
class ProbeConfig:
    """Everything `probe` needs besides the model and the images.

    Args:
        preset: name of the preset this config came from ("custom" once edited by hand).
        inversion: the ReNoise settings.
        distance: "mofc" (Gaussian squared W2, as the released code) or "w1" (empirical EMD).
        n_normal: size of the N set of N(0, I) draws that d_N compares against.
        seed: fixes every random draw (VAE sample, roll offsets, N set, bootstrap).
        bootstrap_samples / confidence: the d_N interval (0 samples disables it).
        quantize_psnr: round both images to 8 bits before the MSE (mofc).
        batch_size: images per chunk; None picks automatically. A CUDA OOM halves it and retries.
        resize: what to do with images whose size is not the model's resolution.
        keep_seeds / keep_reconstructions: return the z_T tensors / decoded images.
        progress: tqdm progress bars.
        check_finite: track NaN/Inf per image on the device (no host sync inside the step loop):
            an image whose inversion or reconstruction diverges is marked diverged, with the
            timestep, and counts as an image with no memory; the others still count. The probe
            raises NonFiniteError only when every image diverged, or at the first divergence
            with `strict`. Off: NaN/Inf reaches the statistics, which refuse it.
        strict: raise NonFiniteError (image and timestep named) at any divergence.
        backend: the fused ops (ReNoise update, noise regularisation, NLL/PSNR reductions):
            "auto" (Triton on CUDA, PyTorch on CPU), "triton", or "torch" (the reference).
        compile_unet: run the UNet through `torch.compile` (fixed shapes per chunk; first
            chunk pays the compile time). The model's own module is left untouched.
        rng: where the random draws come from.
            "per_image" (default): each image's generator is seeded from (seed, set, index), so
            results are independent of batching and of the other images.
            "released": bit-for-bit the released MoFC code's random stream. Every image gets a
            fresh generator seeded with `image_seed` (42); z0 is its VAE posterior sample, then
            two unused randn draws of the latent's shape, then the roll offsets; the image tensor
            goes into the VAE channels_last, as diffusers' preprocessing hands it over; the N set
            is drawn one seed at a time from a generator seeded with `normal_seed` (0).
            Still batch-invariant (every image starts from the same seed).
        image_seed: the per-image generator seed in "released" mode (None: 42); must stay None
            in "per_image" mode, where `seed` fixes everything.
        normal_seed: the N set's generator seed (None: derived from `seed`, or 0 in "released" mode).
        memory_psnr_margin_db: the memory score counts an image's seed only when its
            reconstruction is within this many dB of the reference images' median PSNR
            (`unlearn_guard.signal.memory_score`).
        memory_typical_sigmas: ... and only when its NLL lies within this many standard deviations
            of the N set's mean (the typical set of N(0, I); `unlearn_guard.signal.memory_score`).
        control_images: the negative control (`unlearn_guard.controls`): this many images no model
            can have learned, made from `seed`, each inverted with the concept's prompt and with the
            neutral prompt "" (2 x control_images more inversions); 0 turns it off (with a warning).
            Needs a reference set (its memory score uses R's anchors).
    """

    preset: PresetName = "mofc"
    inversion: InversionConfig = field(default_factory=InversionConfig)
    distance: DistanceKind = "mofc"
    n_normal: int = 50
    seed: int = 0
    bootstrap_samples: int = 1000
    confidence: float = 0.95
    quantize_psnr: bool = True
    batch_size: int | None = None
    resize: ResizePolicy = "resize"
    keep_seeds: bool = False
    keep_reconstructions: bool = False
    progress: bool = True
    check_finite: bool = True
    strict: bool = False
    backend: BackendName = "auto"
    compile_unet: bool = False
    rng: RngMode = "per_image"
    image_seed: int | None = None
    normal_seed: int | None = None
    memory_psnr_margin_db: float = 5.0
    memory_typical_sigmas: float = DEFAULT_TYPICAL_SIGMAS
    control_images: int = DEFAULT_CONTROL_IMAGES

    def __post_init__(self) -> None:
        if isinstance(self.inversion, dict):
            object.__setattr__(self, "inversion", InversionConfig(**self.inversion))
        require_field("config", self.preset in ("mofc", "fast", "track", "ddim", "custom"), "preset", self.preset,
                 "mofc|fast|track|ddim|custom")
        require_field("config", self.distance in ("mofc", "w1"), "distance", self.distance, "'mofc' or 'w1'")
        require_field("config", self.n_normal >= 2, "n_normal", self.n_normal, "an int >= 2")
        require_field("config", self.bootstrap_samples >= 0, "bootstrap_samples", self.bootstrap_samples, "an int >= 0")
        require_field("config", 0.0 < self.confidence < 1.0, "confidence", self.confidence, "a number in (0, 1)")
        require_field("config", 
            self.batch_size is None or self.batch_size >= 1, "batch_size", self.batch_size, "None or an int >= 1"
        )
        require_field("config", self.resize in ("error", "resize", "center_crop"), "resize", self.resize, "error|resize|center_crop")
        require_field("config", self.backend in ("auto", "triton", "torch"), "backend", self.backend, "auto|triton|torch")
        require_field("config", self.rng in ("per_image", "released"), "rng", self.rng, "'per_image' or 'released'")
        require_field("config", isinstance(self.memory_psnr_margin_db, (int, float)) and 0 <= self.memory_psnr_margin_db < float("inf"),
                 "memory_psnr_margin_db", self.memory_psnr_margin_db, "a number >= 0 (dB)")
        require_field("config", is_number(self.memory_typical_sigmas) and 0 < self.memory_typical_sigmas < float("inf"),
                      "memory_typical_sigmas", self.memory_typical_sigmas, "a number > 0")
        require_field("config", is_int(self.control_images) and 0 <= self.control_images <= 64, "control_images",
                      self.control_images, "an int in [0, 64] (0 turns the negative control off)")
        require_field("config", _is_seed(self.seed), "seed", self.seed, "an int (torch.Generator.manual_seed range)")
        for name in ("image_seed", "normal_seed"):
            value = getattr(self, name)
            require_field("config", value is None or _is_seed(value), name, value, "None or an int (manual_seed range)")
        require_field("config", self.image_seed is None or self.rng == "released", "image_seed", self.image_seed,
                 "None unless rng='released' (in 'per_image' mode `seed` fixes every draw)")

    @property
    def image_generator_seed(self) -> int | None:
        """The seed of every image's generator in "released" mode; None in "per_image" mode."""
        if self.rng != "released":
            return None
        return RELEASED_IMAGE_SEED if self.image_seed is None else self.image_seed

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "ProbeConfig":
        """A preset's config, with keyword overrides of top-level fields (see `replace`)."""
        if name not in PRESETS:
            raise InputError(f"unknown preset {name!r}; expected one of {sorted(PRESETS)}")
        return PRESETS[name].replace(**overrides)

    def replace(self, **changes: Any) -> "ProbeConfig":
        """A copy with `changes`; the preset label becomes "custom" when a change touches the
        science (anything but the bookkeeping fields), so reports never mislabel a config."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise InputError(f"ProbeConfig has no field(s) {sorted(unknown)}")
        if "preset" not in changes:
            science = {k for k, v in changes.items() if k not in _BOOKKEEPING and v != getattr(self, k)}
            if science:
                changes["preset"] = "custom"
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ProbeConfig":
        require_known_fields(cls, data)
        data = dict(data)
        if isinstance(data.get("inversion"), dict):
            inv = dict(data["inversion"])
            for key in ("early_window", "late_window"):
                if key in inv:
                    inv[key] = tuple(inv[key])
            if isinstance(inv.get("regularization"), dict):
                inv["regularization"] = RegularizationConfig(**inv["regularization"])
            data["inversion"] = InversionConfig(**inv)
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> "ProbeConfig":
        return cls.from_dict(json.loads(text))


def _is_seed(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**64


# Fields that change how a probe runs or what it keeps, but not the numbers it measures.
_BOOKKEEPING = frozenset({"seed", "batch_size", "keep_seeds", "keep_reconstructions", "progress", "check_finite", "strict",
                          "bootstrap_samples", "confidence", "n_normal", "resize",
                          # How the numbers are computed, not which: same science within dtype tolerance.
                          "backend", "compile_unet",
                          # Which random stream, not which algorithm: like `seed`.
                          "rng", "image_seed", "normal_seed",
                          # An extra set beside E and R (the negative control); E's numbers do not change.
                          "control_images"})

PRESETS: dict[str, ProbeConfig] = {
    "mofc": ProbeConfig(preset="mofc"),
    "fast": ProbeConfig(
        preset="fast",
        inversion=InversionConfig(num_steps=10, renoise_steps=1, early_window=(0, 2), late_window=(0, 2)),
    ),
    "track": ProbeConfig(
        preset="track",
        inversion=InversionConfig(
            num_steps=20, renoise_steps=0, early_window=(0, 0), late_window=(0, 0),
            regularization=RegularizationConfig(enabled=False),
        ),
    ),
    "ddim": ProbeConfig(
        preset="ddim",
        inversion=InversionConfig(
            num_steps=50, renoise_steps=0, early_window=(0, 0), late_window=(0, 0),
            regularization=RegularizationConfig(enabled=False),
        ),
    ),
}
