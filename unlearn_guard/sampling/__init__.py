"""Text-to-image sampling from a `DiffusionModel`, and the sampling settings prompt checks run over.

    from unlearn_guard.sampling import WORLD_SETTINGS, sample_with_setting
    images = sample_with_setting(model, cond, uncond, seeds, WORLD_SETTINGS[2])   # pndm g3.0 25 steps

- `sample_from_embeddings` / `sample_with_setting` (sample.py): one seed per image, CFG, our DDIM
  or a diffusers scheduler by name.
- `SamplingSetting`, `WORLD_SETTINGS`, `STANDARD_SETTINGS`, `as_settings` (settings.py).
- `build_scheduler` (schedulers.py): diffusers' scheduler by name from the model's config.
"""

from .sample import sample_from_embeddings, sample_with_setting
from .schedulers import SCHEDULER_CLASSES, build_scheduler
from .settings import (DEFAULT_SETTING, SCHEDULER_NAMES, SETTING_SETS, STANDARD_SETTINGS, WORLD_SETTINGS,
                       SamplingSetting, as_settings, check_scheduler)

__all__ = ["DEFAULT_SETTING", "SCHEDULER_CLASSES", "SCHEDULER_NAMES", "SETTING_SETS", "STANDARD_SETTINGS",
           "SamplingSetting", "WORLD_SETTINGS", "as_settings", "build_scheduler", "check_scheduler",
           "sample_from_embeddings", "sample_with_setting"]
