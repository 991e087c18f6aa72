"""Multi-memory search (SPEC 6) on the tiny model: reduction to the probe, distinct seeds from
distinct supports, batch equals singles, decoder inversion, errors, and the model left as found."""

from __future__ import annotations

import json

import pytest
import torch

from unlearn_guard.attacks import MemorySearchConfig, find_memories
from unlearn_guard.config import InversionConfig, ProbeConfig, RegularizationConfig
from unlearn_guard.errors import InputError
from unlearn_guard.inversion.decoder import decode_unclamped, decoder_invert
from unlearn_guard.models import snapshot_module_state
from unlearn_guard.probe import probe
from unlearn_guard.stats import psnr

from conftest import assert_close

# 4 DDIM steps, K=1 with reachable windows (regularisation on): the released variant's random
# draws all happen. DDIM_ONLY has no random draw at all after z0 (K=0, no regularisation).
# The random-weight tiny model's seeds are not typical N(0, I) draws, so under the default band its memory
# score is undefined (tests/test_controls.py); these tests check the search's bookkeeping, so the band is open.
QUICK = ProbeConfig(preset="custom", inversion=InversionConfig(num_steps=4, renoise_steps=1, early_window=(0, 2),
                                                               late_window=(0, 2)),
                    n_normal=20, bootstrap_samples=50, progress=False, memory_typical_sigmas=1e6)
DDIM_ONLY = QUICK.replace(inversion=InversionConfig(num_steps=4, renoise_steps=0, early_window=(0, 0),
                                                    late_window=(0, 0), z0_mode="mean",
                                                    regularization=RegularizationConfig(enabled=False)))
FEW = MemorySearchConfig(decoder_steps=3)


@pytest.fixture()
def sets(tiny_images):
    """queries (2), support (2), reference (2) from 6 smooth 64x64 images."""
    g = torch.Generator().manual_seed(99)
    extra = torch.nn.functional.interpolate(torch.rand(2, 3, 8, 8, generator=g), size=(64, 64), mode="bilinear",
                                            align_corners=False).clamp(0, 1)
    return tiny_images[:2], tiny_images[2:4], extra


def test_one_memory_without_support_is_the_single_probe(tiny_model, sets):
    queries, _, reference = sets
    single = probe(tiny_model, queries, "a circle", reference=reference, reference_prompts="a square", config=QUICK,
                   keep_seeds=True)
    found = find_memories(tiny_model, queries, "a circle", reference=reference, reference_prompts="a square",
                          config=QUICK, memories=1, keep_seeds=True)
    assert found.seeds.shape == (2, 1, 4, 8, 8)
    assert torch.equal(found.seeds[:, 0], single.erased.seeds)
    for image, own, m in zip(found.images, single.erased.images, single.memory.per_image):
        assert len(image.memories) == 1 and image.memories[0].support is None
        assert image.memories[0].nll == own.nll and image.memories[0].psnr == own.psnr
        assert image.memories[0].memory == pytest.approx(m, abs=1e-12)
        assert image.distinct_memories == int(m > 0 and own.psnr >= single.memory.psnr_cut)
        assert image.cosine == [[pytest.approx(0.0, abs=1e-12)]] and image.mean_cosine_among is None
    # the best-of-1 memory score is the memory score itself
    assert found.memory.value == pytest.approx(single.memory.value, abs=1e-12)
    assert found.summary()["memory_single"] == pytest.approx(single.memory.value)


def test_distinct_support_images_give_distinct_seeds_identical_ones_do_not(tiny_model, sets):
    queries, support, _ = sets
    # No random draw after z0 (DDIM, posterior mean, paper variant): the support alone sets each memory.
    twice = torch.stack([support[0], support[0]])
    same = find_memories(tiny_model, queries[:1], "p", support=twice, memories=3, config=DDIM_ONLY, search=FEW,
                         variant="paper", keep_seeds=True)
    different = find_memories(tiny_model, queries[:1], "p", support=support, memories=3, config=DDIM_ONLY, search=FEW,
                              variant="paper", keep_seeds=True)
    assert torch.equal(same.seeds[0, 1], same.seeds[0, 2])  # negative control: one support, one memory
    assert torch.equal(different.seeds[0, 1], same.seeds[0, 1])
    cosine = torch.tensor(different.images[0].cosine)
    assert cosine[1, 2] > 1e-4 and cosine[0, 1] > 1e-4 and cosine[0, 2] > 1e-4
    assert different.images[0].memories[2].support == "image[1]"


def test_batch_equals_singles_and_same_seed_is_identical(tiny_model, sets):
    queries, support, reference = sets
    kwargs = dict(support=support, memories=3, reference=reference, reference_prompts="r", config=QUICK, keep_seeds=True)
    batched = find_memories(tiny_model, queries, "p", search=FEW.replace(decoder_batch_size=4), batch_size=4, **kwargs)
    again = find_memories(tiny_model, queries, "p", search=FEW.replace(decoder_batch_size=4), batch_size=4, **kwargs)
    singles = find_memories(tiny_model, queries, "p", search=FEW.replace(decoder_batch_size=1), batch_size=1, **kwargs)
    assert torch.equal(batched.seeds, again.seeds)
    assert_close(batched.seeds, singles.seeds, scale=100)
    for a, b in zip(batched.images, singles.images):
        for x, y in zip(a.memories, b.memories):
            assert x.psnr == pytest.approx(y.psnr, abs=1e-2) and x.nll == pytest.approx(y.nll, rel=1e-5)
    # another seed draws other posterior samples and roll offsets: other memories
    other = find_memories(tiny_model, queries, "p", search=FEW, seed=1, **kwargs)
    assert not torch.allclose(other.seeds[:, 1:], batched.seeds[:, 1:])


def test_result_reports_every_memory_and_round_trips_to_json(tiny_model, sets, tmp_path):
    queries, support, reference = sets
    found = find_memories(tiny_model, queries, "p", support=support, memories=3, reference=reference,
                          reference_prompts="r", config=QUICK, search=FEW, keep_reconstructions=True)
    assert found.reconstructions.shape == (2, 3, 3, 64, 64)
    image = found.images[0]
    assert [m.index for m in image.memories] == [0, 1, 2]
    assert all(m.memory is not None and m.decoder_psnr is not None for m in image.memories[1:])
    cosine = torch.tensor(image.cosine)
    assert torch.allclose(cosine, cosine.T) and torch.allclose(cosine.diagonal(), torch.zeros(3), atol=1e-12)
    assert image.distinct_memories == sum(bool(m.distinct) for m in image.memories)
    assert all(m.reconstructs for m in image.memories if m.distinct)
    data = json.loads(found.to_json(tmp_path / "memories.json"))
    assert data["search"]["memories"] == 3 and data["search"]["variant"] == "released"
    assert data["search"]["resolved_decoder_steps"] == 3
    assert len(data["images"][1]["cosine"]) == 3 and data["probe"]["memory"] is not None
    assert "distinct memories per image" in found.summary_table()


def test_distinct_count_merges_memories_closer_than_the_threshold(tiny_model, sets):
    queries, support, reference = sets
    kwargs = dict(support=support, memories=3, reference=reference, reference_prompts="r", config=QUICK)
    loose = find_memories(tiny_model, queries, "p", search=FEW.replace(distinct_cosine=0.0), **kwargs)
    strict = find_memories(tiny_model, queries, "p", search=FEW.replace(distinct_cosine=2.0), **kwargs)
    for a, b in zip(loose.images, strict.images):
        assert a.distinct_memories == sum(bool(m.reconstructs) for m in a.memories)
        assert b.distinct_memories == min(1, a.distinct_memories)  # everything lies within distance 2


@pytest.mark.parametrize("support, memories, expected", [
    (None, 3, "needs 2 support images"),
    ("one", 3, "support"),  # a path that does not exist
    (5, 2, "support"),
    (torch.rand(1, 3, 64, 64), 3, "needs 2 support images; got 1"),
    (torch.rand(2, 4, 64, 64), 2, "support"),  # 4 channels: never taken for a latent
    (torch.rand(2, 3, 64, 64), 1, "memories=1 uses only each image's own seed"),
    (torch.rand(2, 3, 64, 64) * 2, 2, "support"),  # values outside [0, 1]
])
def test_bad_support_is_a_clear_error(tiny_model, tiny_images, support, memories, expected):
    with pytest.raises(InputError, match=expected):
        find_memories(tiny_model, tiny_images[:1], "p", support=support, memories=memories, config=QUICK, search=FEW)


def test_bad_search_settings_are_named():
    with pytest.raises(InputError, match="memories"):
        MemorySearchConfig(memories=0)
    with pytest.raises(InputError, match="fidelity"):
        MemorySearchConfig(fidelity="best")
    with pytest.raises(InputError, match="variant"):
        MemorySearchConfig(variant="code")
    assert (MemorySearchConfig(fidelity="mofc").steps, MemorySearchConfig(fidelity="mofc").lr) == (3000, 1e-2)
    assert (MemorySearchConfig().steps, MemorySearchConfig(decoder_lr=0.5).lr) == (300, 0.5)
    assert MemorySearchConfig.from_dict(MemorySearchConfig(memories=5).to_dict()) == MemorySearchConfig(memories=5)


def test_find_memories_leaves_the_model_as_found(tiny_model, sets):
    queries, support, _ = sets
    tiny_model.unet.train()
    tiny_model.vae.requires_grad_(True)
    before = snapshot_module_state(*tiny_model.modules())
    find_memories(tiny_model, queries[:1], "p", support=support, memories=2, config=QUICK, search=FEW)
    assert snapshot_module_state(*tiny_model.modules()) == before
    assert all(p.grad is None for p in tiny_model.vae.parameters())


def test_decoder_inversion_improves_the_decoding_and_batch_equals_singles(tiny_model, tiny_images):
    vae = tiny_model.vae.requires_grad_(False)
    targets = tiny_images[:3]
    start = tiny_model.encode_images(targets * 2 - 1, None, mode="mean") / tiny_model.scaling_factor
    before = psnr(decode_unclamped(vae, start).clamp(0, 1).detach(), targets, quantize=False)
    batched = decoder_invert(vae, targets, start, steps=20)
    after = psnr(decode_unclamped(vae, batched).clamp(0, 1).detach(), targets, quantize=False)
    assert bool((after > before + 0.5).all())  # the optimisation does something measurable
    singles = torch.cat([decoder_invert(vae, targets[i : i + 1], start[i : i + 1], steps=20) for i in range(3)])
    assert_close(batched, singles, scale=100)
    assert torch.equal(decoder_invert(vae, targets, start, steps=0), start)  # 0 steps: the start itself
