"""L-PPO end to end on a tiny random LLaVA built from configs (CPU, seconds per run).

The tiny model's LM is initialised with a larger weight scale (0.2 instead of 0.02) so that
its next-token distributions are far from uniform and a few PPO steps visibly move them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch


from icet.errors import IcetError  # noqa: E402
from icet.lppo.config import LppoParams  # noqa: E402
from icet.lppo.rollout import PolicyWithValue, generate_samples, score_samples  # noqa: E402
from icet.lppo.trainer import apply_lppo, build_policy, row_order, train_lppo  # noqa: E402
from icet.models.loading import load_adapter  # noqa: E402
from tiny_models import LPPO_PROMPTS, LPPO_WORDS, build_tiny_llava as build_tiny  # noqa: E402

WORDS, PROMPTS = LPPO_WORDS, LPPO_PROMPTS
N_LAYERS = 4  # as tiny_models.N_LAYERS
TARGET = "zindle"

# small and quick: 4 prompts per rollout, 2 per minibatch, 2 PPO epochs, 6-token responses
FAST = {"rollout_batch": 4, "minibatch": 2, "ppo_epochs": 2, "max_new_tokens": 6, "lr": 1e-2,
        "eta": 0.05, "layer_mode": "uniform", "checkpoint_every": 2}


def build_tiny_llava(out_dir: Path, seed: int = 0) -> Path:
    return build_tiny(out_dir, seed, WORDS, initializer_range=0.2)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny model folder and an RT JSONL of 6 prompts with noise images beside it."""
    from PIL import Image

    root = tmp_path_factory.mktemp("lppo")
    model_dir = build_tiny_llava(root / "model")
    data = root / "rt"
    data.mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for i in range(6):
        pixels = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(data / f"img-{i}.png")
        rows.append({"id": f"rt-{i:04d}", "prompt": PROMPTS[i % len(PROMPTS)],
                     "image": f"img-{i}.png", "kind": "harmful", "category": "glorping"})
    (data / "rt.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {"model": str(model_dir), "rt": str(data / "rt.jsonl"), "rows": rows, "data": data}


def target_share(prompts, responses):
    """Reward = share of response words that are the target word."""
    return [sum(w == TARGET for w in r.split()) / max(1, len(r.split())) for r in responses]


def longer_is_better(prompts, responses):
    """Reward = number of words: non-zero advantages from the first step."""
    return [float(len(r.split())) for r in responses]


def run(world, out, params, seed=0, reward_fn=target_share):
    return train_lppo(world["model"], world["rt"], str(out), {**FAST, **params}, seed,
                      reward_fn=reward_fn, log=str(Path(out).parent / f"{Path(out).name}.log"))


def captured_run(world, out, params, reward_fn=target_share):
    """train_lppo, also handing back the adapter it trained (to inspect in-memory weights)."""
    import icet.models.loading as loading

    seen = {}
    real = loading.load_adapter

    def spy(*args, **kwargs):
        seen["adapter"] = real(*args, **kwargs)
        return seen["adapter"]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(loading, "load_adapter", spy)
        final = run(world, out, params, reward_fn=reward_fn)
    return final, seen["adapter"]


def fresh_state(world):
    from transformers import LlavaForConditionalGeneration

    model = LlavaForConditionalGeneration.from_pretrained(world["model"])
    return {k: v.clone() for k, v in model.state_dict().items()}


def images_of(world, rows):
    return [str(world["data"] / r["image"]) for r in rows]


# --- the value loss and the LM --------------------------------------------------------------

@pytest.mark.parametrize("value_trains_lm", [True, False])
def test_value_trains_lm_decides_whether_the_value_loss_reaches_the_policy(world, value_trains_lm):
    from icet.lppo.rollout import collate, response_mask

    adapter = load_adapter(world["model"])
    policy, _ = build_policy(adapter.model, LppoParams.from_dict({"layer_mode": "fixed"}))
    module = PolicyWithValue(policy, 32, value_trains_lm)
    with torch.no_grad():  # a non-zero head, so the value loss has a gradient to pass on
        module.value_head.weight.fill_(0.1)
    rows = world["rows"][:2]
    torch.manual_seed(0)
    samples = generate_samples(policy, adapter, rows, images_of(world, rows), [2, 2],
                               max_new_tokens=3, temperature=1.0, top_k=0)
    width = response_mask(samples).shape[1]
    pad = adapter.processor.tokenizer.pad_token_id
    _, values = module(adapter, collate(samples, width, pad, "cpu", adapter.token_axes), width,
                       None if samples[0].across_layers else 2, 1.0)
    (values ** 2).sum().backward()
    lora = [p for n, p in policy.named_parameters() if "lora_" in n]
    reached = any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in lora)
    assert reached == value_trains_lm
    assert module.value_head.weight.grad.abs().sum() > 0  # the head learns either way


# --- rollouts use the sampled layer ------------------------------------------------------

def test_rollout_uses_each_samples_layer_for_generation_policy_and_reference(world):
    """The split path (one generate / forward per layer): each call sees its layer's features.
    The across-layers path has its own tests (test_lppo_layer_rows.py)."""
    adapter = load_adapter(world["model"])
    base = adapter.model
    policy, reference = build_policy(base, LppoParams.from_dict({"layer_mode": "fixed"}))
    assert reference is None  # LoRA: the reference is the same model, adapters disabled
    module = PolicyWithValue(policy, 32)
    rows = world["rows"][:4]
    images = images_of(world, rows)
    pixels = adapter.prepare([r["prompt"] for r in rows], images)["pixel_values"]
    with torch.no_grad():
        hidden = base.model.vision_tower(pixels, output_hidden_states=True).hidden_states
    projector_inputs = []
    hook = base.model.multi_modal_projector.register_forward_hook(
        lambda m, inputs, out: projector_inputs.append(inputs[0].detach().clone()))
    try:
        torch.manual_seed(0)
        samples = generate_samples(policy, adapter, rows, images, [0, 4, 0, 4], max_new_tokens=4,
                                   temperature=1.0, top_k=0, across_layers=False)
        assert [s.layer for s in samples] == [0, 4, 0, 4]  # recorded per sample
        # one generate call per layer, each fed that layer's hidden states (CLS cropped)
        assert len(projector_inputs) == 2
        assert torch.equal(projector_inputs[0], hidden[0][[0, 2], 1:])
        assert torch.equal(projector_inputs[1], hidden[4][[1, 3], 1:])

        projector_inputs.clear()
        rollout = score_samples(module, reference, adapter, samples, temperature=1.0, chunk=8)
        # policy then reference, layer 0 then layer 4: the same layer for both
        assert len(projector_inputs) == 4
        for got, (layer, idx) in zip(projector_inputs, [(0, [0, 2]), (0, [0, 2]),
                                                        (4, [1, 3]), (4, [1, 3])]):
            assert torch.equal(got, hidden[layer][idx, 1:])
    finally:
        hook.remove()
    assert rollout.layers == [0, 4, 0, 4]
    # LoRA B starts at zero: policy == reference, so the KL penalty starts at exactly 0
    assert torch.equal(rollout.logp, rollout.logp_ref)
    assert (rollout.logp[rollout.mask.bool()] < 0).all()

    # The same responses scored with other layers' features give other log-probs (ratios).
    for s in samples:
        s.layer = 2
    moved = score_samples(module, reference, adapter, samples, temperature=1.0, chunk=8)
    diff = (moved.logp - rollout.logp).abs()[rollout.mask.bool()]
    assert diff.max() > 1e-3

    # With non-zero LoRA weights the policy moves, the reference (adapters off) does not.
    with torch.no_grad():
        for name, param in policy.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5, generator=torch.Generator().manual_seed(1))
    changed = score_samples(module, reference, adapter, samples, temperature=1.0, chunk=8)
    assert torch.equal(changed.logp_ref, moved.logp_ref)
    assert not torch.equal(changed.logp, moved.logp)


# --- a short training run: what moves and what must not -----------------------------------

@pytest.fixture(scope="module")
def trained(world, tmp_path_factory):
    out = tmp_path_factory.mktemp("trained") / "run"
    final, adapter = captured_run(world, out, {"steps": 3})
    return {"out": out, "final": final, "adapter": adapter}


def test_training_leaves_encoder_projector_and_base_lm_bit_identical(world, trained):
    before = fresh_state(world)
    model = trained["adapter"].model
    after = {n.replace(".base_layer.", "."): p for n, p in model.named_parameters()
             if "lora_" not in n}
    assert set(after) <= set(before) and len(after) >= len(before) - 1  # lm_head tied
    for name, value in after.items():
        assert torch.equal(value, before[name]), name
        assert not value.requires_grad, name
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b)  # the adapters did train
    lora_targets = {n.split(".lora_")[0] for n, _ in model.named_parameters() if "lora_A" in n}
    assert all(".language_model." in n for n in lora_targets)
    assert {n.rsplit(".", 1)[-1] for n in lora_targets} == set(
        LppoParams.from_dict(FAST).lora["target_modules"])  # the schema's default


def test_outputs_metrics_and_recorded_layers(world, trained):
    out = trained["out"]
    from safetensors.torch import load_file

    adapter_weights = load_file(out / "adapter" / "adapter_model.safetensors")
    assert adapter_weights and all("lora_" in k for k in adapter_weights)
    assert set(load_file(out / "value_head.safetensors")) == {"weight", "bias"}
    lines = (out / "metrics.csv").read_text().splitlines()
    header = lines[0].split(",")
    assert header[:3] == ["step", "reward", "kl"] and "layers" in header and "kl_coef" in header
    assert len(lines) == 4
    for number, line in enumerate(lines[1:], start=1):
        row = dict(zip(header, line.split(",")))
        assert int(row["step"]) == number
        layers = [int(x) for x in row["layers"].split()]
        assert len(layers) == FAST["rollout_batch"] and all(0 <= x <= N_LAYERS for x in layers)
    summary = json.loads((out / "lppo.json").read_text())
    assert summary["steps"] == 3 and summary["seed"] == 0 and summary["policy"] == "lora"
    assert summary["final_metrics"]["step"] == 3
    assert summary["params"]["lam"] == 0.95
    updates = (out / "updates.csv").read_text().splitlines()
    assert updates[0].split(",")[:3] == ["step", "epoch", "minibatch"]
    # each step: ppo_epochs x rollout_batch / minibatch optimiser updates
    assert len(updates) - 1 == 3 * FAST["ppo_epochs"] * FAST["rollout_batch"] // FAST["minibatch"]
    # checkpoint_every 2: step 2 and the final step 3 (keep_checkpoints 2)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-2", "step-3"]


def test_saved_adapter_reloads_to_the_same_logits(world, trained):
    rows = world["rows"][:3]
    prompts, images = [r["prompt"] for r in rows], images_of(world, rows)
    in_memory = trained["adapter"].logits(prompts, images, layer=1)
    reloaded = load_adapter(world["model"], peft_adapter=trained["out"] / "adapter")
    assert torch.equal(reloaded.logits(prompts, images, layer=1), in_memory)
    base = load_adapter(world["model"])
    assert not torch.allclose(base.logits(prompts, images, layer=1), in_memory)
    base.model = apply_lppo(base.model, trained["out"])  # merged LoRA: same up to rounding
    assert torch.allclose(base.logits(prompts, images, layer=1), in_memory, atol=1e-4)


# --- resume, determinism, errors ----------------------------------------------------------

def test_resume_after_interruption_matches_an_uninterrupted_run(world, tmp_path):
    params = {"steps": 4, "checkpoint_every": 2}
    run(world, tmp_path / "straight", params, reward_fn=longer_is_better)

    calls = {"n": 0}

    def crash_in_step_3(prompts, responses):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("preempted")
        return longer_is_better(prompts, responses)

    with pytest.raises(RuntimeError, match="preempted"):
        run(world, tmp_path / "resumed", params, reward_fn=crash_in_step_3)
    assert [p.name for p in (tmp_path / "resumed" / "checkpoints").iterdir()] == ["step-2"]
    assert not (tmp_path / "resumed" / "adapter").exists()
    run(world, tmp_path / "resumed", params, reward_fn=longer_is_better)
    for name in ("adapter/adapter_model.safetensors", "value_head.safetensors", "metrics.csv"):
        assert (tmp_path / "straight" / name).read_bytes() == \
            (tmp_path / "resumed" / name).read_bytes(), name

    from safetensors.torch import load_file

    trained_b = [w for k, w in load_file(tmp_path / "resumed" / "adapter" /
                                         "adapter_model.safetensors").items() if "lora_B" in k]
    assert any(w.abs().sum() > 0 for w in trained_b)  # the runs compared did learn something
    assert "resuming from" in (tmp_path / "resumed.log").read_text()

    # A rerun whose outputs were deleted (Snakemake does before it reruns a job) resumes from
    # the final checkpoint, runs no step, and writes the same outputs again.
    import shutil

    shutil.rmtree(tmp_path / "resumed" / "adapter")
    for name in ("value_head.safetensors", "metrics.csv", "lppo.json"):
        (tmp_path / "resumed" / name).unlink()
    def no_step_left(prompts, responses):
        raise AssertionError("a finished run trained again")

    run(world, tmp_path / "resumed", params, reward_fn=no_step_left)
    for name in ("adapter/adapter_model.safetensors", "value_head.safetensors", "metrics.csv"):
        assert (tmp_path / "straight" / name).read_bytes() == \
            (tmp_path / "resumed" / name).read_bytes(), name

    with pytest.raises(IcetError, match="different lr"):
        run(world, tmp_path / "resumed", {**params, "lr": 0.5})


def test_checkpoint_files_hold_no_pickle(trained):
    """RNG states are JSON and safetensors; every .pt loads with weights_only=True."""
    from safetensors.torch import load_file

    ckpt = trained["out"] / "checkpoints" / "step-2"
    names = {p.name for p in ckpt.iterdir()}
    assert "rng.pt" not in names and {"rng-0.json", "rng-0.safetensors"} <= names
    for path in ckpt.rglob("*"):
        if path.suffix == ".pt":
            torch.load(path, map_location="cpu", weights_only=True)
        elif path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".safetensors":
            load_file(path)
    assert set(load_file(ckpt / "rng-0.safetensors")) == {"torch"}  # CPU run: no CUDA state


def test_rng_states_round_trip_through_json_and_safetensors(tmp_path):
    import random

    from icet.lppo.trainer import load_rng_states, rng_states, save_rng_states, set_rng_states

    random.seed(5), np.random.seed(5), torch.manual_seed(5)
    random.gauss(0, 1), np.random.standard_normal()  # cached Gaussians are state too
    save_rng_states(tmp_path, [rng_states()])

    def draws():
        return (random.random(), random.gauss(0, 1), np.random.standard_normal(3).tolist(),
                torch.rand(3).tolist())

    first = draws()
    set_rng_states(*load_rng_states(tmp_path, 0))
    assert draws() == first
    with pytest.raises(IcetError, match="no RNG state for process 1"):
        load_rng_states(tmp_path, 1)


def test_resume_refuses_other_inputs_and_steps_below_the_checkpoint(world, tmp_path):
    """A checkpoint made on another model, RT data or reward model is not resumed, and
    `steps` below the newest checkpoint is an error: one line each, before any loading."""
    import shutil

    from tiny_models import build_tiny_reward

    model = Path(shutil.copytree(world["model"], tmp_path / "model"))
    data = Path(shutil.copytree(world["data"], tmp_path / "data"))
    reward = build_tiny_reward(tmp_path / "reward")
    out = tmp_path / "run"

    def train(**params):
        return train_lppo(str(model), str(data / "rt.jsonl"), str(out),
                          {**FAST, "steps": 2, **params}, 0, reward_model_dir=str(reward))

    train()
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-2"]
    with pytest.raises(IcetError, match=r"step-2: checkpoint is at step 2, past steps = 1; "
                       ) as err:
        train(steps=1)
    assert "\n" not in str(err.value)

    def refused(path: Path, change: bytes, what: str):
        """`path` changed as `change` says is refused as a different `what`, then restored."""
        original = path.read_bytes() if path.exists() else None
        path.write_bytes(change)
        with pytest.raises(IcetError, match=rf"step-2: checkpoint was made with different {what};"):
            train(steps=3)
        if original is None:
            path.unlink()
        else:
            path.write_bytes(original)

    refused(model / "notes.txt", b"a file added to the model folder", "model")
    rt = data / "rt.jsonl"
    refused(rt, rt.read_bytes().replace(b"glorp", b"zindle", 1), "rt_data")
    refused(data / "img-0.png", (data / "img-1.png").read_bytes(), "rt_data")
    refused(reward / "config.json",
            (reward / "config.json").read_bytes().replace(b'"n_layer": 1', b'"n_layer": 1 '),
            "reward_model")
    train(steps=3)  # everything restored: resumes from step 2
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-2", "step-3"]


def test_num_layers_that_disagree_with_the_checkpoint_stop_before_any_step(world, tmp_path):
    """The config's N for the model goes through the sweep's load check: a wrong one stops
    with that check's one line, before any rollout, reward or checkpoint."""
    calls = []

    def reward(prompts, responses):
        calls.append(len(prompts))
        return [0.0] * len(prompts)

    with pytest.raises(IcetError) as sweep_err:
        load_adapter(world["model"], num_layers=N_LAYERS + 1)
    out = tmp_path / "run"
    with pytest.raises(IcetError) as err:
        train_lppo(world["model"], world["rt"], str(out), {**FAST, "steps": 1}, 0,
                   reward_fn=reward, num_layers=N_LAYERS + 1)
    assert str(err.value) == str(sweep_err.value)
    assert f"config num_layers is {N_LAYERS + 1}" in str(err.value) and "\n" not in str(err.value)
    assert calls == [] and not (out / "checkpoints").exists() and not (out / "metrics.csv").exists()
    train_lppo(world["model"], world["rt"], str(out), {**FAST, "steps": 1}, 0,
               reward_fn=reward, num_layers=N_LAYERS)  # the checkpoint's N: trains
    assert calls and (out / "metrics.csv").is_file()


def test_nan_reward_stops_with_one_line_naming_step_and_sample(world, tmp_path):
    def nan_for_second(prompts, responses):
        return [0.0, float("nan")] + [0.0] * (len(prompts) - 2)

    second = world["rows"][row_order(len(world["rows"]), 1, 0)]["id"]
    with pytest.raises(IcetError, match=rf"step 1: non-finite reward nan for sample '{second}'") as err:
        run(world, tmp_path / "nan", {"steps": 2}, reward_fn=nan_for_second)
    assert "\n" not in str(err.value)


def test_gradient_accumulation_and_checkpointing_give_the_same_update(world, tmp_path):
    # One minibatch of 4 mixed-layer samples: whole, in 2 micro-batches, or recomputed by
    # gradient checkpointing, the token-weighted gradient (hence the update) is the same.
    from safetensors.torch import load_file

    weights = []
    for name, extra in (("whole", {}), ("accum", {"grad_accum": 2}),
                        ("checkpointing", {"gradient_checkpointing": True})):
        out = tmp_path / name
        run(world, out, {"steps": 1, "minibatch": 4, "ppo_epochs": 1, **extra},
            reward_fn=longer_is_better)
        weights.append(load_file(out / "adapter" / "adapter_model.safetensors"))
    for other in weights[1:]:
        assert other.keys() == weights[0].keys()
        for key in weights[0]:
            assert torch.allclose(weights[0][key], other[key], atol=1e-6), key
    assert any(w.abs().sum() > 0 for k, w in weights[0].items() if "lora_B" in k)


@pytest.mark.numerics
def test_the_policys_step_does_not_depend_on_the_value_loss_weight(world, tmp_path):
    """With the value loss on the head alone, the first step's LoRA update is the policy
    loss's (the rollout's values are the zero-initialised head's, whatever c1): bit for bit
    the same for c1 0.1 and 1.0. Clipping one global norm over LoRA and head made the head's
    reward-scale gradient set the factor that scaled the LoRA step, so it differed."""
    from safetensors.torch import load_file

    weights = []
    for c1 in (0.1, 1.0):
        out = tmp_path / f"c1-{c1}"
        run(world, out, {"steps": 1, "c1": c1, "value_trains_lm": False, "max_grad_norm": 0.5},
            reward_fn=longer_is_better)
        weights.append(load_file(out / "adapter" / "adapter_model.safetensors"))
        updates = (out / "updates.csv").read_text().splitlines()
        header = updates[0].split(",")
        norms = [float(dict(zip(header, line.split(",")))["value_grad_norm"]) for line in updates[1:]]
        assert max(norms) > 0.5  # the head's gradient is above the clip: the case that mattered
    assert weights[0].keys() == weights[1].keys()
    assert any(w.abs().sum() > 0 for k, w in weights[0].items() if "lora_B" in k)
    for key in weights[0]:
        assert torch.equal(weights[0][key], weights[1][key]), key


@pytest.mark.parametrize("threshold, skipped", [(2.0, True), (3.0, False)])
def test_a_minibatch_over_the_ratio_threshold_is_skipped_and_counted(world, threshold, skipped):
    """Rollout log-probs moved down by 1: every token's ratio is e = 2.72 at the first update.
    Over ratio_threshold 2 each minibatch is skipped (counted, no weight moves); under 3 it is
    not."""
    from accelerate import Accelerator

    from icet.lppo.trainer import advantages_of, parameter_groups, ppo_update

    params = LppoParams.from_dict({**FAST, "ppo_epochs": 1, "ratio_threshold": threshold})
    adapter = load_adapter(world["model"])
    policy, reference = build_policy(adapter.model, params)
    module = PolicyWithValue(policy, 32, False)
    rows = world["rows"][:4]
    torch.manual_seed(0)
    samples = generate_samples(policy, adapter, rows, images_of(world, rows), [1, 2, 1, 4],
                               max_new_tokens=4, temperature=1.0, top_k=0)
    rollout = score_samples(module, reference, adapter, samples, temperature=1.0, chunk=2)
    rollout.logp = (rollout.logp - 1.0) * rollout.mask
    advantages_of(rollout, [1.0, -1.0, 2.0, 0.0], 0.1, params, step=1)
    groups = parameter_groups(module)
    before = [q.detach().clone() for g in groups.values() for q in g]
    optimizer = torch.optim.AdamW([q for g in groups.values() for q in g], lr=0.01)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    stats, updates = ppo_update(module, adapter, rollout, params, optimizer, scheduler,
                                Accelerator(cpu=True), np.random.default_rng(0), groups)
    assert len(updates) == 2
    assert all(u["ratio"] == pytest.approx(np.e, rel=1e-4) for u in updates)
    assert all(u["skipped"] == int(skipped) for u in updates)
    assert stats["skipped_updates"] == (2.0 if skipped else 0.0)
    assert stats["approx_kl"] == pytest.approx(0.5, rel=1e-4)  # 0.5 * (1.0)^2
    after = [q.detach() for g in groups.values() for q in g]
    moved = any(not torch.equal(a, b) for a, b in zip(after, before))
    assert moved != skipped
    assert scheduler.last_epoch == (0 if skipped else 2)


def test_full_finetune_trains_the_lm_only(world, tmp_path):
    _, adapter = captured_run(world, tmp_path / "full", {"steps": 1, "full_finetune": True,
                                                         "lr": 1e-3}, reward_fn=longer_is_better)
    before = fresh_state(world)
    changed = {n for n, p in adapter.model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all(n.startswith(("model.language_model.", "lm_head.")) for n in changed)
    assert (tmp_path / "full" / "adapter" / "config.json").is_file()  # a complete model folder


@pytest.mark.numerics
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_learning_raises_the_reward_of_the_rewarded_word(world, tmp_path, seed):
    # A weak KL penalty (the target-word share is at most 1 per response) with Ziegler's
    # adaptive controller, which must raise eta while the KL sits above its target. Three
    # seeds, each must learn: at 24 steps one sampling stream in three had not yet found the
    # word (mean reward still ~0.03); by 40 every one of six seeds was at 0.60-0.85.
    run(world, tmp_path / "learn", {"steps": 40, "rollout_batch": 8, "minibatch": 4,
                                    "layer_mode": "fixed", "checkpoint_every": 100, "eta": 0.01,
                                    "kl_mode": "adaptive", "target_kl": 4.0, "kl_horizon": 100},
        seed=seed)
    lines = (tmp_path / "learn" / "metrics.csv").read_text().splitlines()
    header = lines[0].split(",")
    rows = [dict(zip(header, line.split(","))) for line in lines[1:]]
    rewards = [float(r["reward"]) for r in rows]
    assert len(rewards) == 40 and {r["layers"] for r in rows} == {"3 3 3 3 3 3 3 3"}
    assert np.mean(rewards[-4:]) > np.mean(rewards[:4]) + 0.2, rewards
    kl_coef = [float(r["kl_coef"]) for r in rows]
    assert kl_coef[0] == 0.01 and kl_coef[-1] > kl_coef[0]


# --- several processes, as a cluster job launches L-PPO -----------------------------------

def test_two_cpu_processes_write_one_adapter_and_resume_after_a_kill(world, tmp_path):
    """2 ranks over gloo, launched as rule lppo_train launches them (icet.lppo.launch):
    each rank rolls out its own prompts, one adapter is written, and a run killed after its
    first checkpoint resumes to the bytes of an uninterrupted one."""
    import signal
    import subprocess
    import time

    import psutil
    from safetensors.torch import load_file

    from icet.lppo.launch import launch_command, processes_for, run_lppo_job, write_job
    from tiny_models import build_tiny_reward

    assert processes_for({"gpu": 0}) == 1 and processes_for({"gpu": 2}) == 2
    assert processes_for({"gpu": 0, "processes": 2}) == 2
    reward = build_tiny_reward(tmp_path / "reward")
    job = dict(rt_jsonl=world["rt"], params={**FAST, "steps": 4, "checkpoint_every": 2},
               reward_model_dir=str(reward), seed=0, device="cpu")
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    run_lppo_job(world["model"], out_dir=str(straight), processes=2,
                 log=str(tmp_path / "straight.log"), **job)
    assert [p.name for p in straight.iterdir() if "adapter" in p.name] == ["adapter"]
    assert json.loads((straight / "lppo.json").read_text())["processes"] == 2
    lines = (straight / "metrics.csv").read_text().splitlines()
    header = lines[0].split(",")
    layers = [dict(zip(header, line.split(",")))["layers"].split() for line in lines[1:]]
    assert len(layers) == 4 and all(len(l) == 2 * FAST["rollout_batch"] for l in layers)
    names = {p.name for p in (straight / "checkpoints" / "step-4").iterdir()}
    assert {"rng-0.json", "rng-1.json", "rng-0.safetensors", "rng-1.safetensors"} <= names

    # The same command the rule runs, killed as SLURM kills a job (SIGKILL to every process:
    # torchrun and its ranks, which torchrun starts in sessions of their own) once step 2 is
    # saved.
    spec = write_job(tmp_path / "job.json", model_dir=world["model"], out_dir=str(killed),
                     log=str(tmp_path / "killed.log"), **job)
    proc = subprocess.Popen(launch_command(spec, 2))
    try:
        deadline = time.monotonic() + 300
        while not (killed / "checkpoints" / "step-2" / "state.json").exists():
            assert proc.poll() is None and time.monotonic() < deadline, "run ended before step 2"
            time.sleep(0.05)
    finally:
        launcher = psutil.Process(proc.pid)
        for process in [launcher, *launcher.children(recursive=True)]:
            process.send_signal(signal.SIGKILL)
        proc.wait()
    assert not (killed / "adapter").exists()  # killed mid-run, not after it
    assert not (killed / "checkpoints" / "step-4").exists()
    time.sleep(1)  # no orphaned rank carries on
    assert not (killed / "checkpoints" / "step-4").exists()
    with pytest.raises(IcetError, match="checkpoint was made with different processes"):
        train_lppo(world["model"], world["rt"], str(killed), job["params"], 0,
                   reward_model_dir=str(reward), device="cpu")
    run_lppo_job(world["model"], out_dir=str(killed), processes=2,
                 log=str(tmp_path / "killed.log"), **job)
    assert "resuming from" in (tmp_path / "killed.log").read_text()
    for name in ("adapter/adapter_model.safetensors", "value_head.safetensors", "metrics.csv"):
        assert (straight / name).read_bytes() == (killed / name).read_bytes(), name
    trained_b = [w for k, w in load_file(straight / "adapter" / "adapter_model.safetensors").items()
                 if "lora_B" in k]
    assert any(w.abs().sum() > 0 for w in trained_b)  # the runs compared did learn something
