"""The adversarial prompt's discrete tokens (SPEC 9.2): one distribution u_i over the vocabulary
per token, kept on the probability simplex; a one-hot token drawn from it in the forward pass,
with a straight-through gradient back to u_i; and the prompt's token row with k slots for them.

    u = uniform_distributions(k, V)                    # (k, V), each row on the simplex
    ids = draw_tokens(u, "sampled", generator)         # (k,) one token per row
    one_hot = straight_through_one_hot(u, ids)         # (k, V): forward one-hot, gradient to u
    u.data = project_to_simplex(u.data)                # after every optimiser step
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ..errors import InputError, ModelError

# Bisection halves [min(a) - 1, max(a)] (width <= range + 1) per iteration: 60 halvings leave
# the support of the solution found to float64 precision, and the last step solves mu exactly on it.
_BISECTION_STEPS = 60


def uniform_distributions(num_tokens: int, vocabulary: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(num_tokens, vocabulary) float32, every row 1 / vocabulary: the paper's start."""
    return torch.full((num_tokens, vocabulary), 1.0 / vocabulary, device=device)


def project_to_simplex(values: torch.Tensor) -> torch.Tensor:
    """Euclidean projection of every row (..., V) onto {u : 0 <= u_v <= 1, sum_v u_v = 1} (SPEC 9.2).

    The projection is clip(values - mu, 0, 1) for the shift mu with sum clip(values - mu, 0, 1) = 1.
    mu is found without sorting: bisection on [min - 1, max] (the sum falls monotonically in mu from
    V to 0), then solved exactly on the entries the bisection left strictly inside (0, 1). Computed
    in float64 and returned in `values`' dtype.
    """
    a = values.detach().to(torch.float64)
    low = a.amin(dim=-1, keepdim=True) - 1.0  # every entry clips to 1: the sum is V >= 1
    high = a.amax(dim=-1, keepdim=True)  # every entry clips to 0: the sum is 0 <= 1
    for _ in range(_BISECTION_STEPS):
        middle = (low + high) / 2
        above = (a - middle).clamp(0.0, 1.0).sum(dim=-1, keepdim=True) > 1.0
        low = torch.where(above, middle, low)
        high = torch.where(above, high, middle)
    shift = high
    # On the support found, sum = (#entries at 1) + sum_free (a - mu) = 1 is linear in mu: solve it.
    shifted = a - shift
    free = (shifted > 0) & (shifted < 1)
    count = free.sum(dim=-1, keepdim=True)
    at_one = (shifted >= 1).sum(dim=-1, keepdim=True)
    exact = ((a * free).sum(dim=-1, keepdim=True) + at_one - 1.0) / count.clamp(min=1)
    shift = torch.where(count > 0, exact, shift)
    return (a - shift).clamp(0.0, 1.0).to(values.dtype)


class _StraightThrough(torch.autograd.Function):
    """Forward: the one-hot draw. Backward: the gradient w.r.t. the one-hot, clipped to [-1, 1]
    (hardtanh, as the released code's STERandSelect), handed to u as if the forward were u."""

    @staticmethod
    def forward(ctx: Any, distributions: torch.Tensor, one_hot: torch.Tensor) -> torch.Tensor:
        return one_hot.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return F.hardtanh(grad), None


def straight_through_one_hot(distributions: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """(..., V) one-hot rows of `ids` (...) in the forward pass; in the backward pass the gradient
    reaches `distributions` (..., V) unchanged but clipped to [-1, 1]: one_hot + u - u.detach() with
    the released code's clip."""
    one_hot = F.one_hot(ids.to(distributions.device), distributions.shape[-1]).to(distributions.dtype)
    return _StraightThrough.apply(distributions, one_hot)


def draw_tokens(distributions: torch.Tensor, mode: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """(k,) token ids from (k, V) distributions: a draw from each row ("sampled", on the CPU with
    `generator`, so the device never changes a draw) or each row's argmax ("argmax", the first on a tie)."""
    if mode == "argmax":
        return distributions.detach().argmax(dim=-1).cpu()
    if mode != "sampled":
        raise InputError(f"one_hot: got {mode!r}; expected 'sampled' or 'argmax'")
    weights = distributions.detach().to("cpu", torch.float32).clamp(min=0)
    return torch.multinomial(weights, 1, generator=generator).squeeze(-1)


def vocabulary_size(tokenizer: Any, embeddings: torch.Tensor) -> int:
    """V: the tokens both the tokenizer can write back as text and the text encoder has a row for."""
    return min(len(tokenizer), int(embeddings.shape[0]))


def adversarial_slots(tokenizer: Any, prompt: str, num_tokens: int, placement: str,
                      label: str = "prompts") -> tuple[torch.Tensor, torch.Tensor]:
    """The prompt's padded token row (L,) with `num_tokens` slots after the start token ("prefix") or
    before the end token ("suffix"), and the slots' positions (k,). The slots hold the pad token
    until the tokens are filled in. InputError when the prompt and the slots do not fit the
    tokenizer's length (L = model_max_length: 77 for SD 1.x)."""
    ids = list(tokenizer(prompt).input_ids)
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    if len(ids) < 2 or ids[0] != bos or ids[-1] != eos:
        raise ModelError(f"the tokenizer does not wrap {prompt!r} in start and end tokens ({ids[:4]}...); "
                         "expected a CLIP-style tokenizer (Stable Diffusion 1.x)")
    length = int(tokenizer.model_max_length)
    if len(ids) + num_tokens > length:
        raise InputError(f"{label}: {prompt!r} is {len(ids)} tokens with start and end; {num_tokens} adversarial "
                         f"tokens make {len(ids) + num_tokens}, over the tokenizer's {length}; shorten the prompt "
                         "or lower num_tokens")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    body = ids[1:-1]
    start = 1 if placement == "prefix" else 1 + len(body)
    row = [bos, *body, eos]
    row[start:start] = [pad] * num_tokens
    row += [pad] * (length - len(row))
    return torch.tensor(row, dtype=torch.long), torch.arange(start, start + num_tokens)


def adversarial_text(tokenizer: Any, prompt: str, token_ids: list[int], placement: str) -> tuple[str, str]:
    """(the tokens as text, the full adversarial prompt): the tokens decoded and put before
    ("prefix") or after ("suffix") the prompt, as the prompt a user would type."""
    tokens = tokenizer.decode(list(token_ids)).strip()
    if not prompt.strip():
        return tokens, tokens
    return tokens, (f"{tokens} {prompt}" if placement == "prefix" else f"{prompt} {tokens}")
