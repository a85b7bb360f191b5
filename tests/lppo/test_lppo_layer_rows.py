"""L-PPO across layers: one vision pass per rollout, each sample's own layer's LM inputs
(`VLMAdapter.layer_rows`), every forward over samples of any layers; against the split path
(one generate / forward per layer) on the same samples: the same log-probs, values, losses and
updated weights, on tiny LLaVA, LLaVA-NeXT and Mllama models built from configs.
"""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from icet.lppo.config import LppoParams
from icet.lppo.rollout import (PolicyWithValue, generate_samples, sampling_scores,
                               score_samples)
from icet.lppo.trainer import advantages_of, build_policy, parameter_groups, ppo_update
from icet.models.loading import load_adapter
from tiny_models import (MLLAMA_LAYERS, N_LAYERS, PROMPTS, build_tiny_llava, build_tiny_llava_next,
                         build_tiny_mllama, noise_image)

ARCHITECTURES = {"llava": (build_tiny_llava, N_LAYERS),
                 "llava_next": (build_tiny_llava_next, N_LAYERS),
                 "mllama": (build_tiny_mllama, MLLAMA_LAYERS)}
pytestmark = pytest.mark.numerics  # float agreement of two paths: rerun on every kernel path

# image sizes that tile differently (LLaVA-NeXT, Mllama): rows of one batch differ in shape
SIZES = [(40, 48), (16, 16), (50, 30), (32, 32), (64, 20), (24, 40)]


@pytest.fixture(scope="module", params=sorted(ARCHITECTURES))
def arch(request, tmp_path_factory):
    build, n_layers = ARCHITECTURES[request.param]
    folder = build(tmp_path_factory.mktemp(request.param))
    rows = [{"id": f"r{i}", "prompt": PROMPTS[i % len(PROMPTS)]} for i in range(len(SIZES))]
    images = [noise_image(i, h, w) for i, (h, w) in enumerate(SIZES)]
    # every layer kind: the input, inner layers (repeated, so a layer holds several rows), N
    layers = [0, n_layers, 1, 2, 0, n_layers - 1]
    return {"name": request.param, "dir": folder, "rows": rows, "images": images,
            "layers": layers}


def policy_of(arch, full_finetune=False):
    """A loaded adapter with a policy whose LoRA B (or whole LM) is moved off the reference,
    and a value head with non-zero weights, so every quantity compared is non-trivial."""
    adapter = load_adapter(arch["dir"])
    params = LppoParams.from_dict({"layer_mode": "uniform", "lora": {"r": 4},
                                   "full_finetune": full_finetune, "lr": 0.5, "max_grad_norm": 1.0,
                                   "minibatch": 3, "rollout_batch": 6, "ppo_epochs": 2})
    policy, reference = build_policy(adapter.model, params)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, value in policy.named_parameters():
            if value.requires_grad and ("lora_B" in name or full_finetune):
                value.add_(torch.randn(value.shape, generator=generator) * 0.05)
    module = PolicyWithValue(policy, adapter.model.config.get_text_config().hidden_size, False)
    with torch.no_grad():
        module.value_head.weight.normal_(0, 0.5, generator=generator)
    return adapter, module, reference, params


def split_twins(adapter, samples, images):
    """The same samples as the split path holds them: the processor's per-row outputs."""
    inputs = adapter.prepare([s.prompt for s in samples], images)
    extra = {k: v for k, v in inputs.items()
             if k not in ("input_ids", "attention_mask") and v.shape[:1] == (len(samples),)}
    return [dataclasses.replace(s, extra={k: v[i] for k, v in extra.items()}, across_layers=False)
            for i, s in enumerate(samples)]


def sampled(arch, adapter, module):
    torch.manual_seed(0)
    return generate_samples(module.policy, adapter, arch["rows"], arch["images"], arch["layers"],
                            max_new_tokens=5, temperature=1.0, top_k=0)


def test_rollout_is_scored_alike_across_and_split(arch):
    adapter, module, reference, params = policy_of(arch)
    samples = sampled(arch, adapter, module)
    assert all(s.across_layers for s in samples) and [s.layer for s in samples] == arch["layers"]
    twins = split_twins(adapter, samples, arch["images"])
    across = score_samples(module, reference, adapter, samples, temperature=1.0, chunk=4)
    split = score_samples(module, reference, adapter, twins, temperature=1.0, chunk=4)
    for name in ("logp", "logp_ref", "values"):
        torch.testing.assert_close(getattr(across, name), getattr(split, name),
                                   rtol=1e-5, atol=1e-5, msg=name)
    assert not torch.allclose(across.logp, across.logp_ref)  # the policy is off the reference
    assert across.values.abs().max() > 1e-3
    # the known wrong answer: rows 0 and 1 (layers 0 and N) given each other's layer rows
    swapped = [dataclasses.replace(s) for s in samples]
    swapped[0].extra, swapped[1].extra = samples[1].extra, samples[0].extra
    if swapped[0].extra["inputs_embeds"].shape == samples[0].extra["inputs_embeds"].shape:
        wrong = score_samples(module, reference, adapter, swapped, temperature=1.0, chunk=4)
        assert (wrong.logp[:2] - split.logp[:2]).abs().max() > 1e-3


@pytest.mark.parametrize("full_finetune", [False, True])
def test_one_ppo_update_is_the_same_across_and_split(arch, full_finetune):
    """From the same weights and rollout, one ppo_update on each path: the same losses, ratios,
    gradient norms and (plain SGD, so a gradient difference shows one-to-one) new weights;
    a full fine-tune's embedding rows learn from the prompt's text on both paths."""
    if full_finetune and arch["name"] != "llava":
        pytest.skip("the embedding path is the same code for every architecture")
    from accelerate import Accelerator
    import numpy as np

    adapter, module, reference, params = policy_of(arch, full_finetune)
    samples = sampled(arch, adapter, module)
    twins = split_twins(adapter, samples, arch["images"])
    start = copy.deepcopy(module.state_dict())
    scores = [float(i) - 2.5 for i in range(len(samples))]
    results = []
    for run in (samples, twins):
        module.load_state_dict(start)
        rollout = score_samples(module, reference, adapter, run, temperature=1.0, chunk=3)
        advantages_of(rollout, scores, 0.1, params, step=1)
        groups = parameter_groups(module)
        optimizer = torch.optim.SGD([q for g in groups.values() for q in g], lr=params.lr)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
        module.train()
        stats, updates = ppo_update(module, adapter, rollout, params, optimizer, scheduler,
                                    Accelerator(cpu=True), np.random.default_rng(0), groups)
        module.eval()
        results.append((stats, updates, {k: v.detach().clone() for k, v in module.state_dict().items()}))
    (stats_a, updates_a, after_a), (stats_b, updates_b, after_b) = results
    assert len(updates_a) == len(updates_b) == params.ppo_epochs * 2
    for key, value in stats_a.items():
        assert value == pytest.approx(stats_b[key], rel=1e-5, abs=1e-6), key
    moved = 0
    for name, value in after_a.items():  # 4 steps of lr 0.5: float rounding of the two paths'
        # shapes (padding) compounds to ~1e-6 (seen); a wrong row or layer moves by ~1e-2
        torch.testing.assert_close(value, after_b[name], rtol=1e-4, atol=2e-5,
                                   msg=lambda m: f"{name}: {m}")
        moved += not torch.equal(value, start[name])
    assert moved >= 3  # the update did move weights (LoRA or LM, and the head)
    if full_finetune:
        embedding = next(k for k in after_a if k.endswith("embed_tokens.weight"))
        prompt_ids = {int(t) for s in samples for t in s.prompt_ids}
        rows = [i for i in prompt_ids if not torch.equal(after_a[embedding][i], start[embedding][i])]
        assert rows, "no prompt token's embedding learned"


def test_one_vision_pass_per_rollout_and_each_row_its_own_layer(arch):
    """Generation runs the vision tower once for the whole rollout; scoring and updates never
    again; each sample keeps its own layer's LM inputs (layer_embeddings' row)."""
    if arch["name"] == "mllama":
        tower = lambda model: model.model.vision_model  # noqa: E731
    else:
        tower = lambda model: model.model.vision_tower  # noqa: E731
    adapter, module, reference, params = policy_of(arch)
    calls = []
    hook = tower(adapter.model).register_forward_hook(lambda *args: calls.append(1))
    try:
        samples = sampled(arch, adapter, module)
        assert len(calls) == 1
        score_samples(module, reference, adapter, samples, temperature=1.0, chunk=4)
        assert len(calls) == 1
    finally:
        hook.remove()
    inputs, per_layer = adapter.layer_embeddings([s.prompt for s in samples], arch["images"],
                                                 sorted(set(arch["layers"])))
    for i, sample in enumerate(samples):
        expected = per_layer[sample.layer]
        expected = expected if isinstance(expected, dict) else {"inputs_embeds": expected}
        assert set(sample.extra) == set(expected)
        for name, value in expected.items():
            assert torch.equal(sample.extra[name], value[i]), (name, i)


def test_sampler_is_generates_distribution():
    """The across-layers sampler's scores are what `generate(do_sample=True)`'s processors
    make of the logits: suppressed ids, temperature, top-k."""
    from transformers import (LogitsProcessorList, SuppressTokensLogitsProcessor,
                              TemperatureLogitsWarper, TopKLogitsWarper)

    logits = torch.randn(4, 50, generator=torch.Generator().manual_seed(0))
    ids = torch.zeros(4, 3, dtype=torch.long)
    for temperature, top_k in ((1.0, 0), (0.7, 5), (1.3, 1)):
        processors = LogitsProcessorList([SuppressTokensLogitsProcessor([3, 7]),
                                          TemperatureLogitsWarper(temperature)]
                                         + ([TopKLogitsWarper(top_k)] if top_k else []))
        theirs = torch.softmax(processors(ids, logits.clone()), dim=-1)
        ours = torch.softmax(sampling_scores(logits, [3, 7], temperature, top_k), dim=-1)
        torch.testing.assert_close(ours, theirs)
        assert float(ours[:, [3, 7]].sum()) == 0.0
