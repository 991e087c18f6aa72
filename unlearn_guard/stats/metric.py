"""`MemoryDistance`: the memory relative distance d_N (SPEC 5) as a torchmetrics metric.

The stateful twin of `functional.memory_distance`: `update` collects NLLs of the erased set E and
the reference set R, `compute` draws the N set and returns a `MemoryDistanceResult`. States are
lists of NLL tensors reduced with "cat", so they gather across processes. Like torchmetrics'
FID `reset_real_features`, the reference NLLs survive `reset()` unless `reset_reference=True`,
so R is inverted once and reused at every checkpoint.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Literal, Optional

import numpy as np
import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from ..config import DistanceKind
from ..errors import InputError, NonFiniteError
from .functional import (
    MemoryDistanceResult,
    check_bootstrap_arguments,
    check_seed_shape,
    distance_function,
    first_indices,
    memory_distance,
    normal_nll_set,
    seed_nll,
)

Subset = Literal["erased", "reference"]
_STATE_OF_SUBSET = {"erased": "nll_erased", "reference": "nll_reference"}


class _Opaque:
    """Hides a result from torchmetrics' compute wrapper, whose `apply_to_collection` walks into
    dataclasses and raises on frozen ones (torchmetrics 1.9 / lightning-utilities)."""

    def __init__(self, value: Any) -> None:
        self.value = value


class MemoryDistance(Metric):
    """d_N(E, R) = D(E, N) / D(R, N) accumulated over batches (SPEC 5).

    Args:
        kind: distance between NLL sets, "mofc" (Gaussian squared W2) or "w1" (empirical W1).
        n_normal: size of the N set of N(0, I) draws.
        normal_seed: seed of the N set (`normal_nll_set`); also seeds the bootstrap.
        bootstrap_samples / confidence: the d_N interval (0 samples disables it).
        seed_shape: z_T's shape without the batch dimension, e.g. (4, 64, 64); if None it is
            taken from the first `update_seeds` call.
        reset_reference: whether `reset()` also clears the reference NLLs.
        kwargs: torchmetrics options (`dist_sync_on_step`, `process_group`, ...).

    `forward` only updates and returns None: d_N of one batch has no meaning, and torchmetrics'
    batch-value path would count the kept reference set twice.
    """

    is_differentiable = False
    higher_is_better = True  # a larger d_N means the concept's seeds look less like known content
    full_state_update = False

    nll_erased: list[torch.Tensor]
    nll_reference: list[torch.Tensor]

    def __init__(
        self,
        kind: DistanceKind = "mofc",
        n_normal: int = 50,
        normal_seed: int = 0,
        bootstrap_samples: int = 1000,
        confidence: float = 0.95,
        seed_shape: Optional[tuple[int, ...]] = None,
        reset_reference: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        distance_function(kind)
        if not isinstance(n_normal, int) or isinstance(n_normal, bool) or n_normal < 2:
            raise InputError(f"n_normal: expected an int >= 2, got {n_normal!r}")
        if not isinstance(normal_seed, int) or isinstance(normal_seed, bool):
            raise InputError(f"normal_seed: expected an int, got {normal_seed!r}")
        check_bootstrap_arguments(bootstrap_samples, confidence, normal_seed)
        if not isinstance(reset_reference, bool):
            raise InputError(f"reset_reference: expected a bool, got {reset_reference!r}")
        self.kind = kind
        self.n_normal = n_normal
        self.normal_seed = normal_seed
        self.bootstrap_samples = bootstrap_samples
        self.confidence = confidence
        self.reset_reference = reset_reference
        self._initial_seed_shape = None if seed_shape is None else check_seed_shape(seed_shape)
        self.seed_shape: Optional[tuple[int, ...]] = self._initial_seed_shape

        self.add_state("nll_erased", default=[], dist_reduce_fx="cat")
        self.add_state("nll_reference", default=[], dist_reduce_fx="cat")

    def update(self, nll: torch.Tensor, subset: Subset) -> None:
        """Add NLLs to a set.

        Args:
            nll: (B,) NLLs of seeds (`seed_nll`); stored as float64.
            subset: "erased" (set E) or "reference" (set R).
        """
        if subset not in _STATE_OF_SUBSET:
            raise InputError(f"subset: expected 'erased' or 'reference', got {subset!r}")
        if not isinstance(nll, torch.Tensor) or nll.dim() != 1:
            shape = tuple(nll.shape) if isinstance(nll, torch.Tensor) else type(nll).__name__
            raise InputError(f"nll: expected a 1-D tensor of shape (B,), got {shape}")
        nll = nll.detach().to(torch.float64)
        bad = (~torch.isfinite(nll)).nonzero().flatten().tolist()
        if bad:
            raise NonFiniteError(f"nll ({subset} set): NaN or Inf at batch indices [{first_indices(bad)}]")
        getattr(self, _STATE_OF_SUBSET[subset]).append(nll)

    def update_seeds(self, seeds: torch.Tensor, subset: Subset) -> None:
        """Add the NLLs of seeds (B, *seed_shape) to a set; records seed_shape on first use."""
        nll = seed_nll(seeds)  # (B,) float64; validates the seeds
        shape = tuple(seeds.shape[1:])
        if self.seed_shape is not None and shape != self.seed_shape:
            raise InputError(
                f"seeds: expected shape (B, {', '.join(map(str, self.seed_shape))}) as before, "
                f"got {tuple(seeds.shape)}; every seed of one MemoryDistance must have the same shape"
            )
        self.update(nll, subset)
        self.seed_shape = shape

    def compute(self) -> MemoryDistanceResult:
        """d_N over everything seen since the last reset, with its bootstrap interval."""
        if self.seed_shape is None:
            raise InputError(
                "MemoryDistance: seed_shape is unknown, so the N set cannot be drawn; pass "
                "seed_shape=(C, H, W) of z_T to the constructor or feed seeds through update_seeds"
            )
        nll_normal = normal_nll_set(self.seed_shape, self.n_normal, self.normal_seed)  # (n_normal,)
        return memory_distance(
            self._gathered(self.nll_erased),
            self._gathered(self.nll_reference),
            nll_normal,
            kind=self.kind,
            bootstrap_samples=self.bootstrap_samples,
            confidence=self.confidence,
            seed=self.normal_seed,
        )

    @staticmethod
    def _gathered(state: list[torch.Tensor] | torch.Tensor) -> np.ndarray:
        # after a distributed sync a list state is already one concatenated tensor
        if isinstance(state, list) and len(state) == 0:
            return np.empty(0, dtype=np.float64)
        return dim_zero_cat(state).to(device="cpu", dtype=torch.float64).numpy()

    def _wrap_compute(self, compute: Callable) -> Callable:
        # keep torchmetrics' wrapper (sync across processes, caching) but pass the frozen result
        # through it in an opaque box
        wrapped = super()._wrap_compute(lambda *args, **kwargs: _Opaque(compute(*args, **kwargs)))

        @functools.wraps(compute)
        def unboxed(*args: Any, **kwargs: Any) -> Any:
            return wrapped(*args, **kwargs).value

        return unboxed

    def forward(self, nll: torch.Tensor, subset: Subset) -> None:  # type: ignore[override]
        """Same as `update`; returns None (see the class docstring)."""
        self.update(nll, subset)

    def reset(self) -> None:
        """Clear the erased set; the reference set (and seed_shape) too only if reset_reference."""
        if self.reset_reference:
            super().reset()
            self.seed_shape = self._initial_seed_shape
            return
        kept = list(self.nll_reference)  # super().reset() clears the list object in place
        super().reset()
        self.nll_reference.extend(kept)
