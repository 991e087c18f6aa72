"""Sampling settings: which scheduler, guidance scale and step count a generation uses.

"The prompt no longer draws the concept" depends on how one samples: an erased checkpoint that
rarely draws the concept with DDIM at the evaluation's guidance can draw it several times as often
without guidance or with another scheduler (measured: docs/attacks.md, "Sampling settings"). So
the prompt checks are taken over a small named set of settings, and the worst case counts.

A `SamplingSetting` names its scheduler; `unlearn_guard.sampling.schedulers` builds it from the
model's own scheduler config. "ddim" is this package's DDIM (eta = 0) loop; the others are
diffusers' schedulers driven as `StableDiffusionPipeline` drives them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from ..errors import InputError
from ..validation import is_int, is_number, require_field, require_known_fields

# "ddim": ours (exact, SPEC 1); the rest diffusers' classes (schedulers.SCHEDULER_CLASSES).
SCHEDULER_NAMES: tuple[str, ...] = ("ddim", "pndm", "euler", "euler-a", "dpm++", "lms")
# Ancestral samplers add fresh noise at every step, drawn from each image's own generator.
STOCHASTIC_SCHEDULERS: frozenset[str] = frozenset({"euler-a"})


def check_scheduler(name: Any, argument: str = "scheduler") -> str:
    """`name` if it is one of SCHEDULER_NAMES, else a one-line InputError listing them."""
    if not isinstance(name, str) or name not in SCHEDULER_NAMES:
        raise InputError(f"{argument}: got {name!r}; expected one of {', '.join(SCHEDULER_NAMES)}")
    return name


@dataclass(frozen=True)
class SamplingSetting:
    """One way to sample: scheduler by name, classifier-free guidance scale, denoising steps.

    Args:
        scheduler: one of SCHEDULER_NAMES ("ddim", "pndm", "euler", "euler-a", "dpm++", "lms").
        guidance_scale: the CFG scale, >= 1 (1 = no guidance: the conditional prediction alone).
        num_steps: the scheduler's inference steps (PNDM evaluates the UNet num_steps + 1 times).
    """

    scheduler: str
    guidance_scale: float
    num_steps: int

    def __post_init__(self) -> None:
        check_scheduler(self.scheduler, "SamplingSetting field 'scheduler'")
        require_field("SamplingSetting", is_number(self.guidance_scale) and self.guidance_scale >= 1,
                      "guidance_scale", self.guidance_scale, "a number >= 1")
        require_field("SamplingSetting", is_int(self.num_steps) and 1 <= self.num_steps <= 1000, "num_steps",
                      self.num_steps, "an int in [1, 1000]")

    @property
    def label(self) -> str:
        """Short and unique per setting: "ddim g4.0 25 steps"."""
        return f"{self.scheduler} g{float(self.guidance_scale)} {self.num_steps} steps"

    @property
    def stochastic(self) -> bool:
        """True when the sampler draws fresh noise at every step (from each image's generator)."""
        return self.scheduler in STOCHASTIC_SCHEDULERS

    def to_dict(self) -> dict[str, Any]:
        return {"scheduler": self.scheduler, "guidance_scale": float(self.guidance_scale),
                "num_steps": self.num_steps}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SamplingSetting":
        require_known_fields(cls, data)
        return cls(**data)

    @classmethod
    def parse(cls, spec: str) -> "SamplingSetting":
        """From a command-line spec "SCHEDULER:GUIDANCE:STEPS", e.g. "pndm:3:25"."""
        parts = spec.split(":") if isinstance(spec, str) else []
        try:
            scheduler, guidance, steps = parts[0], float(parts[1]), int(parts[2])
            if len(parts) != 3:
                raise ValueError
        except (ValueError, IndexError):
            raise InputError(f"sampling setting: got {spec!r}; expected SCHEDULER:GUIDANCE:STEPS such as "
                             f"'pndm:3:25' (schedulers: {', '.join(SCHEDULER_NAMES)})") from None
        return cls(scheduler, guidance, steps)


# The world's evaluation setting: what `generate`, `prompt_success` and `PromptCheck` use by default.
DEFAULT_SETTING = SamplingSetting("ddim", 4.0, 25)

# The small world (32x32 images, trained and evaluated with DDIM at guidance 4, 25 steps). Five
# settings: five times one check's cost, each with its own random draw of the same seeds.
WORLD_SETTINGS: tuple[SamplingSetting, ...] = (
    DEFAULT_SETTING,                          # the evaluation setting
    SamplingSetting("ddim", 1.0, 25),         # no guidance (a user's report: the concept came back)
    SamplingSetting("pndm", 3.0, 25),         # SD pipeline's default scheduler at low guidance (the same report)
    SamplingSetting("euler-a", 4.0, 25),      # ancestral: fresh noise at every step
    SamplingSetting("dpm++", 7.5, 25),        # multistep solver at SD's default (strong) guidance
)

# Stable Diffusion 1.x (512x512). What users of SD actually run: the pipeline's defaults, the
# erasure papers' evaluation, the community's common samplers, and low / no guidance.
STANDARD_SETTINGS: tuple[SamplingSetting, ...] = (
    SamplingSetting("pndm", 7.5, 50),         # StableDiffusionPipeline's defaults (PNDM from SD's config)
    SamplingSetting("ddim", 7.5, 50),         # the setting erasure papers (ESD, UnlearnDiffAtk) evaluate with
    SamplingSetting("euler-a", 7.5, 30),      # the ancestral sampler of community front ends
    SamplingSetting("dpm++", 7.5, 25),        # DPM-Solver++ (2M), diffusers' recommended fast scheduler
    SamplingSetting("pndm", 3.0, 50),         # low guidance
    SamplingSetting("ddim", 1.0, 50),         # no guidance
)

SETTING_SETS: dict[str, tuple[SamplingSetting, ...]] = {
    "default": (DEFAULT_SETTING,),
    "world": WORLD_SETTINGS,
    "standard": STANDARD_SETTINGS,
}


def as_settings(value: Any, argument: str = "settings") -> tuple[SamplingSetting, ...]:
    """A non-empty tuple of distinct settings from a set's name ("world", "standard", "default"),
    a comma list of "SCHEDULER:GUIDANCE:STEPS" specs (the command line's form), one
    `SamplingSetting`, or a sequence of them (dicts allowed, as `to_dict` writes them)."""
    if isinstance(value, str):
        if value in SETTING_SETS:
            return SETTING_SETS[value]
        if ":" not in value:
            raise InputError(f"{argument}: got {value!r}; expected one of {', '.join(SETTING_SETS)}, a comma "
                             "list of SCHEDULER:GUIDANCE:STEPS, or a sequence of SamplingSetting")
        value = [SamplingSetting.parse(spec.strip()) for spec in value.split(",") if spec.strip()]
    if isinstance(value, SamplingSetting):
        return (value,)
    if not isinstance(value, Sequence) or not value:
        raise InputError(f"{argument}: got {value!r}; expected a set's name ({', '.join(SETTING_SETS)}), "
                         "a SamplingSetting or a non-empty sequence of them")
    settings = tuple(SamplingSetting.from_dict(v) if isinstance(v, Mapping) else v for v in value)
    bad = [type(s).__name__ for s in settings if not isinstance(s, SamplingSetting)]
    if bad:
        raise InputError(f"{argument}: got items of type {bad}; expected SamplingSetting")
    labels = [s.label for s in settings]
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise InputError(f"{argument}: {repeated} given more than once; expected distinct settings")
    return settings
