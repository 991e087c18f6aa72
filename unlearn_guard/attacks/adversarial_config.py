"""The settings of one UnlearnDiffAtk adversarial-prompt run (SPEC 9): a frozen dataclass that
validates itself, round-trips through JSON (`to_dict` / `from_dict`) and comes in named presets.

    AdversarialPromptConfig.from_preset("unlearndiffatk")   # the paper's settings (SD 1.4)
    AdversarialPromptConfig.from_preset("world", seed=1)    # the shipped small world's
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from ..errors import InputError
from ..validation import is_int, is_number, require_field, require_known_fields

if TYPE_CHECKING:
    from ..sampling import SamplingSetting

Placement = Literal["prefix", "suffix"]
OneHot = Literal["sampled", "argmax"]
PresetName = Literal["unlearndiffatk", "world", "custom"]

# The paper's sweep: t = 10, 30, ..., 990 (T / 50 apart, starting half a gap in), 50 blocks.
PAPER_TIMESTEPS = tuple(range(10, 1000, 20))


@dataclass(frozen=True)
class AdversarialPromptConfig:
    """Settings of one adversarial-prompt attack (UnlearnDiffAtk, Zhang et al., ECCV 2024).

    Args:
        preset: the preset this config came from ("custom" once a setting of the attack changes).
        num_tokens: k, adversarial tokens per prompt (the paper: 5).
        placement: "prefix" (after the start token, the paper's default) or "suffix" (before the
            end token).
        lr / weight_decay: Adam on the token distributions u (the paper: 0.01 and 0.1, Adam's L2 form).
        timesteps: the sweep; one block of `steps_per_timestep` gradient steps at each, in order.
        steps_per_timestep: gradient steps per block (the paper: 40).
        one_hot: how a token is drawn from u_i in the forward pass: "sampled" (a draw from u_i,
            as the released code) or "argmax".
        num_steps / guidance_scale: DDIM steps and CFG scale of every generation (pre-attack,
            after each block, and the base model's targets). The paper: 50 and 7.5.
        batch_size: prompts attacked side by side (one UNet call per step for all of them) and
            images per generation call; 1 is the one-prompt-at-a-time run. Never changes a result.
        seed: with each prompt's own text and seed, fixes every random draw of that prompt
            (noise per step, token draws), independently of the other prompts.
        confidence: of the Wilson intervals around Pre-ASR and ASR.
        keep_images: keep each prompt's last judged image in the result.
        pre_attack_settings: more sampling settings to take Pre-ASR under besides the attack's own
            (DDIM at num_steps / guidance_scale), as `unlearn_guard.sampling.as_settings` reads them:
            a set's name ("world", "standard") or "SCHEDULER:GUIDANCE:STEPS,...". Each is reported
            with the worst (highest) Pre-ASR; only the attack's own setting decides which prompts
            are attacked and what ASR counts, as in the paper. None: the attack's setting alone.
    """

    preset: PresetName = "unlearndiffatk"
    num_tokens: int = 5
    placement: Placement = "prefix"
    lr: float = 0.01
    weight_decay: float = 0.1
    timesteps: tuple[int, ...] = PAPER_TIMESTEPS
    steps_per_timestep: int = 40
    one_hot: OneHot = "sampled"
    num_steps: int = 50
    guidance_scale: float = 7.5
    batch_size: int = 8
    seed: int = 0
    confidence: float = 0.95
    keep_images: bool = True
    pre_attack_settings: str | None = None

    def __post_init__(self) -> None:
        owner = "AdversarialPromptConfig"
        require_field(owner, self.preset in ("unlearndiffatk", "world", "custom"), "preset", self.preset,
                      "'unlearndiffatk', 'world' or 'custom'")
        require_field(owner, is_int(self.num_tokens) and self.num_tokens >= 1, "num_tokens", self.num_tokens,
                      "an int >= 1")
        require_field(owner, self.placement in ("prefix", "suffix"), "placement", self.placement, "'prefix' or 'suffix'")
        require_field(owner, is_number(self.lr) and self.lr > 0, "lr", self.lr, "a finite number > 0")
        require_field(owner, is_number(self.weight_decay) and self.weight_decay >= 0, "weight_decay",
                      self.weight_decay, "a finite number >= 0")
        timesteps = tuple(self.timesteps) if isinstance(self.timesteps, (list, tuple)) else self.timesteps
        require_field(owner, isinstance(timesteps, tuple) and len(timesteps) >= 1
                      and all(is_int(t) and t >= 0 for t in timesteps), "timesteps", self.timesteps,
                      "a non-empty list of ints >= 0 (training timesteps, below the model's num_train_timesteps)")
        object.__setattr__(self, "timesteps", timesteps)
        require_field(owner, is_int(self.steps_per_timestep) and self.steps_per_timestep >= 1, "steps_per_timestep",
                      self.steps_per_timestep, "an int >= 1")
        require_field(owner, self.one_hot in ("sampled", "argmax"), "one_hot", self.one_hot, "'sampled' or 'argmax'")
        require_field(owner, is_int(self.num_steps) and self.num_steps >= 1, "num_steps", self.num_steps, "an int >= 1")
        require_field(owner, is_number(self.guidance_scale) and self.guidance_scale >= 1, "guidance_scale",
                      self.guidance_scale, "a number >= 1")
        require_field(owner, is_int(self.batch_size) and self.batch_size >= 1, "batch_size", self.batch_size,
                      "an int >= 1")
        require_field(owner, is_int(self.seed) and 0 <= self.seed < 2**63, "seed", self.seed, "an int in [0, 2**63)")
        require_field(owner, is_number(self.confidence) and 0 < self.confidence < 1, "confidence", self.confidence,
                      "a number in (0, 1)")
        require_field(owner, isinstance(self.keep_images, bool), "keep_images", self.keep_images, "True or False")
        if self.pre_attack_settings is not None:
            require_field(owner, isinstance(self.pre_attack_settings, str), "pre_attack_settings",
                          self.pre_attack_settings, "None, a set's name or 'SCHEDULER:GUIDANCE:STEPS,...'")
            self.sampling_settings()  # an InputError naming the bad entry

    @property
    def own_setting(self) -> "SamplingSetting":
        """The attack's own sampling: DDIM at `num_steps` and `guidance_scale`."""
        from ..sampling import SamplingSetting

        return SamplingSetting("ddim", float(self.guidance_scale), int(self.num_steps))

    def sampling_settings(self) -> tuple["SamplingSetting", ...]:
        """The attack's own setting first, then each of `pre_attack_settings` not equal to it."""
        from ..sampling import as_settings

        own = self.own_setting
        more = () if self.pre_attack_settings is None else as_settings(self.pre_attack_settings,
                                                                        "pre_attack_settings")
        return (own, *(s for s in more if s.label != own.label))

    @property
    def max_gradient_steps(self) -> int:
        """Gradient steps of a prompt that never succeeds (2,000 with the paper's settings)."""
        return len(self.timesteps) * self.steps_per_timestep

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "AdversarialPromptConfig":
        """A preset's config ("unlearndiffatk" or "world"), with keyword overrides (see `replace`)."""
        if name not in ADVERSARIAL_PRESETS:
            raise InputError(f"preset: got {name!r}; expected one of {sorted(ADVERSARIAL_PRESETS)}")
        return ADVERSARIAL_PRESETS[name].replace(**overrides)

    def replace(self, **changes: Any) -> "AdversarialPromptConfig":
        """A copy with `changes`; the preset label becomes "custom" when a change touches the attack
        (anything but seed, batch_size, confidence and keep_images), so reports never mislabel it."""
        require_known_fields(type(self), changes)
        if "preset" not in changes and any(k not in _BOOKKEEPING and v != getattr(self, k) for k, v in changes.items()):
            changes["preset"] = "custom"
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["timesteps"] = list(self.timesteps)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "AdversarialPromptConfig":
        require_known_fields(cls, data)
        return cls(**data)

    def describe(self) -> str:
        """One line for tables and logs."""
        return (f"{self.preset}: k={self.num_tokens} {self.placement}, {len(self.timesteps)} timesteps x "
                f"{self.steps_per_timestep} steps (lr {self.lr}, wd {self.weight_decay}, {self.one_hot} one-hot), "
                f"generation {self.num_steps} DDIM steps at guidance {self.guidance_scale}")


# Fields that change how a run is batched or reported, not what the attack does to a prompt.
_BOOKKEEPING = frozenset({"seed", "batch_size", "confidence", "keep_images"})

ADVERSARIAL_PRESETS: dict[str, AdversarialPromptConfig] = {
    "unlearndiffatk": AdversarialPromptConfig(preset="unlearndiffatk"),
    # The small world: its tokenizer takes 12 tokens and a full caption is 9, so k = 3 fits every
    # caption; 10 timesteps (50, 150, ..., 950) of 10 steps, and the world's sampling settings
    # (`world.generate`: 25 DDIM steps, guidance 4). Measured in benchmarks/adversarial_prompt_speed.py.
    "world": AdversarialPromptConfig(preset="world", num_tokens=3, timesteps=tuple(range(50, 1000, 100)),
                                     steps_per_timestep=10, num_steps=25, guidance_scale=4.0),
}
