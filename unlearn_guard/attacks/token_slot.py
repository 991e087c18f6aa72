"""How a learned token enters the text encoder without touching the model (SPEC 7).

The template is tokenized with a *carrier* word (one token) in the placeholder's slot, and a
forward hook on the text encoder's input-embedding layer replaces that slot's row with v* for
one call. Nothing is added to the tokenizer and no embedding matrix is resized.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import torch

from ..errors import InputError, ModelError
from ..models.bundle import DiffusionModel


def refuse_two_text_encoders(model: DiffusionModel, attack: str) -> None:
    """ModelError for an SDXL model: the token attacks here learn rows of one text encoder's
    embedding table, while SDXL's UNet reads two encoders (and its pooled embedding comes from the
    second), so a one-encoder attack would leave half of the conditioning untouched and under-report."""
    if model.family == "sdxl":
        raise ModelError(f"{attack} is not supported on SDXL: it learns token rows of one text encoder, and SDXL "
                         "conditions on two (token states of both, the pooled embedding of the second); learning "
                         "both tables is not built yet. Use the probe, multi-memory search and the utility check")


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
    of its output, every other entry as computed. Gradients flow into `vector`. Removed on exit.

    positions (B,) with vector (D,) puts one row in each prompt; positions (B, k) with vector
    (B, k, D) puts k rows in each (the adversarial prompt's tokens). Position embeddings, the
    causal mask and end-token pooling act on the spliced rows exactly as on a tokenized prompt."""
    layer = text_encoder.get_input_embeddings()

    def splice(module: torch.nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
        index = positions.to(output.device)
        rows = torch.arange(output.shape[0], device=output.device)
        rows = rows[:, None] if index.dim() == 2 else rows  # (B, 1) against (B, k)
        spliced = output.clone()
        spliced[rows, index] = vector.to(output.device, output.dtype)
        return spliced

    handle = layer.register_forward_hook(splice)
    try:
        yield
    finally:
        handle.remove()


def encode_with_token(model: DiffusionModel, input_ids: torch.Tensor, positions: torch.Tensor,
                      vector: torch.Tensor) -> torch.Tensor:
    """Text embeddings c (B, L, D_text) of token rows `input_ids` (B, L) with `vector` at `positions`:
    (D,) at (B,), or (B, k, D) at (B, k) (see `spliced_embedding`)."""
    with spliced_embedding(model.text_encoder, positions, vector):
        hidden = model.text_encoder(input_ids.to(model.device))[0]
    return hidden.to(model.dtype)


def check_dimension(model: DiffusionModel, vector: torch.Tensor, what: str) -> None:
    """InputError unless `vector` is (D,) with D the width of the model's text-encoder input embeddings."""
    expected = int(model.text_encoder.get_input_embeddings().weight.shape[-1])
    if vector.dim() != 1 or vector.numel() != expected:
        raise InputError(f"{what}: the token's vector has shape {tuple(vector.shape)}; this model's text encoder "
                         f"takes ({expected},)")
