"""The DDIM schedule of a model, the forward / inverse DDIM steps (SPEC 1), and the conversions
between what a UNet predicts (eps, x0 or v) and the eps every algorithm here works with (SPEC 1.1).

Notation (SPEC -> code):
    abar_t              alphas_cumprod[t]            (`alpha_prod_t`)
    abar_s              alpha at the less-noisy end  (`alpha_prod_s`); abar[0] when s < 0
    z_s -> z_t          inverse step (inversion walks 1, 21, ..., 981 for SD 1.4 at 50 steps)
    z_t -> z_s          DDIM step with eta = 0 (reconstruction walks 981, ..., 1 and then to abar[0])

The betas, abar and timestep spacing come from the model's scheduler config converted to
`DDIMScheduler` with that same config (never re-derived). Sample clipping and thresholding
are switched off: the inverse step is only an exact inverse of an unclipped step.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import torch

from .errors import ModelError
from .kernels.renoise_update import inverse_step_coefficients


@dataclass(frozen=True)
class DDIMSchedule:
    """Inversion timesteps and their abar values for one step count.

    Attributes:
        timesteps: inversion order, ascending (1, 21, ..., 981 for SD 1.4 at 50 steps).
        alpha_prod: abar_t for each entry of `timesteps`, float64.
        alpha_prod_prev: abar_s of the less-noisy end of each step (abar[0] for the first), float64.
        final_alpha_prod: abar at the clean end (alphas_cumprod[0] unless set_alpha_to_one).
        num_train_timesteps: from the config.
    """

    timesteps: tuple[int, ...]
    alpha_prod: torch.Tensor
    alpha_prod_prev: torch.Tensor
    final_alpha_prod: float
    num_train_timesteps: int
    prediction_type: str = "epsilon"

    @property
    def num_steps(self) -> int:
        return len(self.timesteps)

    @property
    def sampling_timesteps(self) -> tuple[int, ...]:
        """Reconstruction order, descending (981, ..., 1)."""
        return tuple(reversed(self.timesteps))

    def alphas_at(self, index: int) -> tuple[float, float]:
        """(abar_t, abar_s) for inversion step `index` (0 = the step that lands on timesteps[0])."""
        return float(self.alpha_prod[index]), float(self.alpha_prod_prev[index])


def _ddim_scheduler(scheduler_config: dict[str, Any]) -> Any:
    """diffusers' `DDIMScheduler` built from a model's scheduler config, clipping and thresholding off."""
    from diffusers import DDIMScheduler

    config = {k: v for k, v in dict(scheduler_config).items() if not k.startswith("_")}
    config.update(clip_sample=False, thresholding=False)
    known = set(inspect.signature(DDIMScheduler.__init__).parameters)
    return DDIMScheduler(**{k: v for k, v in config.items() if k in known})


def alphas_cumprod(scheduler_config: dict[str, Any]) -> torch.Tensor:
    """abar_t for t = 0..T-1 (T = num_train_timesteps), float64, from a model's scheduler config (SPEC 1)."""
    return _ddim_scheduler(scheduler_config).alphas_cumprod.to(torch.float64)


def ddim_schedule(scheduler_config: dict[str, Any], num_steps: int) -> DDIMSchedule:
    """Build the schedule for `num_steps` from a model's scheduler config (SPEC 1)."""
    prediction_type = prediction_type_of(scheduler_config)
    scheduler = _ddim_scheduler(scheduler_config)
    scheduler.set_timesteps(num_steps)
    sampling = [int(t) for t in scheduler.timesteps]  # descending
    inversion = sorted(sampling)
    if len(set(inversion)) != len(inversion):
        raise ModelError(f"scheduler gives repeated timesteps for num_steps={num_steps}: {sampling}")
    alphas_cumprod = scheduler.alphas_cumprod.to(torch.float64)
    final = float(scheduler.final_alpha_cumprod)
    step_gap = scheduler.config.num_train_timesteps // num_steps
    alpha_prod = torch.stack([alphas_cumprod[t] for t in inversion])
    # diffusers' DDIM uses prev = t - num_train_timesteps // num_steps, and final_alpha_cumprod below 0.
    alpha_prev = torch.tensor(
        [float(alphas_cumprod[t - step_gap]) if t - step_gap >= 0 else final for t in inversion],
        dtype=torch.float64,
    )
    return DDIMSchedule(
        timesteps=tuple(inversion),
        alpha_prod=alpha_prod,
        alpha_prod_prev=alpha_prev,
        final_alpha_prod=final,
        num_train_timesteps=int(scheduler.config.num_train_timesteps),
        prediction_type=prediction_type,
    )


def inverse_ddim_step(z_s: torch.Tensor, eps: torch.Tensor, alpha_prod_t: float, alpha_prod_s: float) -> torch.Tensor:
    """z_t = sqrt(abar_t/abar_s) z_s + (sqrt(1-abar_t) - sqrt(abar_t) sqrt(1-abar_s)/sqrt(abar_s)) eps.

    The exact algebraic inverse of `ddim_step` (SPEC 1). Coefficients are formed in float64 (the
    same `inverse_step_coefficients` the fused ReNoise update uses) and applied in the tensors' dtype.
    """
    coef_z, coef_eps = inverse_step_coefficients(alpha_prod_t, alpha_prod_s)
    return coef_z * z_s + coef_eps * eps


def ddim_step(z_t: torch.Tensor, eps: torch.Tensor, alpha_prod_t: float, alpha_prod_s: float) -> torch.Tensor:
    """DDIM (eta = 0) from z_t to z_s: z_s = sqrt(abar_s) x0_pred + sqrt(1-abar_s) eps."""
    a_t, a_s = float(alpha_prod_t), float(alpha_prod_s)
    pred_original = (z_t - (1 - a_t) ** 0.5 * eps) / a_t**0.5
    return a_s**0.5 * pred_original + (1 - a_s) ** 0.5 * eps


# ----------------------------------------------------------------------------- prediction types (SPEC 1.1)
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


def checked_prediction_type(prediction_type: str, label: str = "prediction_type") -> str:
    """`prediction_type` itself; ModelError for one no conversion here covers."""
    if prediction_type not in PREDICTION_TYPES:
        raise ModelError(f"{label}={prediction_type!r}; supported: {', '.join(PREDICTION_TYPES)}")
    return prediction_type


def prediction_type_of(scheduler_config: dict[str, Any]) -> str:
    """The model's prediction type from its scheduler config ("epsilon" when absent), checked."""
    return checked_prediction_type(dict(scheduler_config).get("prediction_type") or "epsilon",
                                   "scheduler prediction_type")


def _coefficients(alpha_prod: float | torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sqrt(abar), sqrt(1 - abar)) formed in float64, cast to `like`'s dtype and device, shaped to
    broadcast over (B, C, h, w) when abar is one value per batch element."""
    a = torch.as_tensor(alpha_prod, dtype=torch.float64)
    root, rest = a.sqrt(), (1 - a).sqrt()
    if a.ndim == 1:
        root, rest = root.view(-1, *([1] * (like.ndim - 1))), rest.view(-1, *([1] * (like.ndim - 1)))
    return root.to(like.device, like.dtype), rest.to(like.device, like.dtype)


def epsilon_from_output(output: torch.Tensor, sample: torch.Tensor, alpha_prod: float | torch.Tensor,
                        prediction_type: str) -> torch.Tensor:
    """eps from the UNet's output at z_t = sqrt(abar) x0 + sqrt(1 - abar) eps:
        epsilon:      eps = output (returned as is: the same tensor, bit for bit)
        v_prediction: v = sqrt(abar) eps - sqrt(1 - abar) x0, so eps = sqrt(abar) v + sqrt(1 - abar) z_t
        sample:       x0 = output, so eps = (z_t - sqrt(abar) x0) / sqrt(1 - abar)
    `alpha_prod` is abar_t, one float or one per batch element; `sample` is z_t on any device."""
    if checked_prediction_type(prediction_type) == "epsilon":
        return output
    root, rest = _coefficients(alpha_prod, output)
    z = sample.to(output)
    if prediction_type == "v_prediction":
        return root * output + rest * z
    return (z - root * output) / rest  # "sample"


def x0_from_output(output: torch.Tensor, sample: torch.Tensor, alpha_prod: float | torch.Tensor,
                   prediction_type: str) -> torch.Tensor:
    """The clean latent x0 predicted at z_t:
        epsilon:      x0 = (z_t - sqrt(1 - abar) eps) / sqrt(abar)
        v_prediction: x0 = sqrt(abar) z_t - sqrt(1 - abar) v
        sample:       x0 = output"""
    if checked_prediction_type(prediction_type) == "sample":
        return output
    root, rest = _coefficients(alpha_prod, output)
    z = sample.to(output)
    if prediction_type == "v_prediction":
        return root * z - rest * output
    return (z - rest * output) / root  # "epsilon"


def alpha_prod_at(alphas: torch.Tensor, timestep: float | torch.Tensor) -> torch.Tensor:
    """abar at timestep(s) t, float64. Integer t reads alphas_cumprod[t]; a fractional t (Euler and
    LMS with "linspace" spacing fall between training timesteps) interpolates sigma = sqrt((1 -
    abar) / abar) linearly in t, as those diffusers schedulers do, so abar = 1 / (1 + sigma^2)
    is the one their step uses."""
    t = torch.as_tensor(timestep, dtype=torch.float64).cpu()
    alphas = alphas.to(torch.float64).cpu()
    if torch.all(t == t.round()):
        return alphas[t.long()]
    sigmas = ((1 - alphas) / alphas).sqrt()
    low = t.floor().long().clamp(0, len(alphas) - 1)
    high = (low + 1).clamp(max=len(alphas) - 1)
    sigma = sigmas[low] + (t - low.double()) * (sigmas[high] - sigmas[low])
    return 1 / (1 + sigma**2)
