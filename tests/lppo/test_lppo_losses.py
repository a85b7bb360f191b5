"""L-PPO's tensor arithmetic against numbers worked out by hand (in the comments)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch


from icet import schemas  # noqa: E402
from icet.errors import IcetError  # noqa: E402
from icet.lppo.config import LppoParams  # noqa: E402
from icet.lppo.losses import (AdaptiveKLController, FixedKLController, gae,  # noqa: E402
                              kl_penalised_rewards, masked_mean, masked_whiten, ppo_clip_loss,
                              token_entropy, value_loss)
from icet.lppo.rollout import by_layer, sample_layers  # noqa: E402


def t(rows):
    return torch.tensor(rows, dtype=torch.float64)


def test_gae_four_steps_by_hand():
    # gamma 0.9, lambda 0.5 (gamma*lambda = 0.45); V after the last token is 0.
    # delta3 = 1.0 - 0.3 = 0.7            A3 = 0.7
    # delta2 = 0.9*0.3 - 0.1 = 0.17       A2 = 0.17 + 0.45*0.7     = 0.485
    # delta1 = 0.5 + 0.9*0.1 - 0.4 = 0.19 A1 = 0.19 + 0.45*0.485   = 0.40825
    # delta0 = 0.9*0.4 - 0.2 = 0.16       A0 = 0.16 + 0.45*0.40825 = 0.3437125
    rewards, values = t([[0.0, 0.5, 0.0, 1.0]]), t([[0.2, 0.4, 0.1, 0.3]])
    adv, ret = gae(rewards, values, torch.ones(1, 4, dtype=torch.float64), gamma=0.9, lam=0.5)
    assert torch.allclose(adv, t([[0.3437125, 0.40825, 0.485, 0.7]]))
    assert torch.allclose(ret, t([[0.5437125, 0.80825, 0.585, 1.0]]))


def test_gae_ignores_padding_and_ends_the_episode_at_the_last_real_token():
    # Two real tokens; the 9s are padding and must not leak in.
    # delta1 = 0.5 - 0.4 = 0.1 (no bootstrap from the pad), A1 = 0.1
    # delta0 = 0.9*0.4 - 0.2 = 0.16, A0 = 0.16 + 0.45*0.1 = 0.205
    rewards, values = t([[0.0, 0.5, 9.0, 9.0]]), t([[0.2, 0.4, 9.0, 9.0]])
    adv, ret = gae(rewards, values, t([[1, 1, 0, 0]]), gamma=0.9, lam=0.5)
    assert torch.allclose(adv, t([[0.205, 0.1, 0.0, 0.0]]))
    assert torch.allclose(ret, t([[0.405, 0.5, 0.0, 0.0]]))


def test_ppo_clip_loss_by_hand():
    # ratio 1.5, A=1:  max(-1.5, -1.2) = -1.2 (clipped)
    # ratio 0.5, A=1:  max(-0.5, -0.8) = -0.5
    # ratio 1.1, A=-2: max(2.2, 2.2)   =  2.2
    # ratio 0.5, A=-1: max(0.5, 0.8)   =  0.8 (clipped)
    # last token is padding.  loss = 1.3 / 4 = 0.325, clip fraction 2/4.
    ratio = t([[1.5, 0.5, 1.1, 0.5, 2.0]])
    adv = t([[1.0, 1.0, -2.0, -1.0, 5.0]])
    loss, clip_frac = ppo_clip_loss(torch.log(ratio), torch.zeros_like(ratio), adv,
                                    t([[1, 1, 1, 1, 0]]), clip=0.2)
    assert loss.item() == pytest.approx(0.325)
    assert clip_frac.item() == pytest.approx(0.5)


def test_ppo_clip_loss_gradient_is_zero_where_clipped():
    logp_new = torch.log(t([[1.5, 1.0]])).requires_grad_(True)
    loss, _ = ppo_clip_loss(logp_new, torch.zeros(1, 2, dtype=torch.float64), t([[1.0, 1.0]]),
                            t([[1, 1]]), clip=0.2)
    loss.backward()
    # d/dlogp of -A*ratio/2 = -ratio/2 = -0.5 on the unclipped token, 0 on the clipped one.
    assert torch.allclose(logp_new.grad, t([[0.0, -0.5]]))


def test_value_loss_by_hand():
    # t0: clip 0.5 -> 0.2; (0.5-1)^2 = 0.25 vs (0.2-1)^2 = 0.64 -> 0.64 (clipped)
    # t1: inside the clip; (0.1-1)^2 = 0.81
    # t2: clip -0.3 -> -0.2, V_clip = 0.8; 0.49 vs 0.64 -> 0.64 (clipped)
    # loss = 0.5 * (0.64 + 0.81 + 0.64) / 3 = 0.348333..., clip fraction 2/3
    loss, frac = value_loss(t([[0.5, 0.1, 0.7]]), t([[0.0, 0.0, 1.0]]), t([[1.0, 1.0, 0.0]]),
                            t([[1, 1, 1]]), clip_value=0.2)
    assert loss.item() == pytest.approx(0.5 * 2.09 / 3)
    assert frac.item() == pytest.approx(2 / 3)


def test_kl_penalty_on_every_response_token_and_score_only_on_the_last():
    logp = t([[-1.0, -2.0, -3.0], [-1.0, -1.0, 0.0]])
    logp_ref = t([[-1.5, -2.0, -2.0], [-2.0, -0.5, 5.0]])
    mask = t([[1, 1, 1], [1, 1, 0]])
    rewards, kl = kl_penalised_rewards([2.0, -1.0], logp, logp_ref, mask, eta=0.1)
    # row 0: kl [0.5, 0, -1] -> [-0.05, 0, 0.1 + 2.0]; row 1: kl [1, -0.5] -> [-0.1, 0.05 - 1.0]
    assert torch.allclose(kl, t([[0.5, 0.0, -1.0], [1.0, -0.5, 0.0]]))
    assert torch.allclose(rewards, t([[-0.05, 0.0, 2.1], [-0.1, -0.95, 0.0]]))
    # eta = 0: the reward is the score alone, on the last real token.
    rewards0, _ = kl_penalised_rewards([2.0, -1.0], logp, logp_ref, mask, eta=0.0)
    assert torch.allclose(rewards0, t([[0.0, 0.0, 2.0], [0.0, -1.0, 0.0]]))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_reward_stops_naming_step_and_sample(bad):
    logp = torch.zeros(2, 2)
    with pytest.raises(IcetError, match=r"step 7.*'rt-0002' \(index 1\)") as err:
        kl_penalised_rewards([0.5, bad], logp, logp, torch.ones(2, 2), eta=0.1, step=7,
                             ids=["rt-0001", "rt-0002"])
    assert "\n" not in str(err.value)
    with pytest.raises(IcetError, match="1 scores for 2 samples"):
        kl_penalised_rewards([0.5], logp, logp, torch.ones(2, 2), eta=0.1, step=7)


def test_masked_whiten_and_mean():
    x, mask = t([[1.0, 2.0, 3.0, 100.0]]), t([[1, 1, 1, 0]])
    assert masked_mean(x, mask).item() == pytest.approx(2.0)
    # mean 2, population variance 2/3 -> (x - 2) / sqrt(2/3); padding stays 0
    expected = [-1 / math.sqrt(2 / 3), 0.0, 1 / math.sqrt(2 / 3), 0.0]
    assert torch.allclose(masked_whiten(x, mask), t([expected]), atol=1e-6)


def test_token_entropy_uniform_and_certain():
    logits = torch.tensor([[[0.0, 0.0, 0.0, 0.0], [0.0, -1e9, -1e9, -1e9]]])
    assert torch.allclose(token_entropy(logits), torch.tensor([[math.log(4), 0.0]]))


def test_kl_controllers_by_hand():
    fixed = FixedKLController(0.2)
    fixed.update(100.0, 10)
    assert fixed.value == 0.2
    ctl = AdaptiveKLController(0.2, target=6.0, horizon=100)
    ctl.update(9.0, n_steps=10)  # error clip(9/6 - 1) = 0.2 -> 0.2 * (1 + 0.2*10/100) = 0.204
    assert ctl.value == pytest.approx(0.204)
    ctl.update(5.4, n_steps=10)  # error -0.1 -> 0.204 * (1 - 0.01) = 0.20196
    assert ctl.value == pytest.approx(0.20196)
    restored = AdaptiveKLController(1.0, target=6.0, horizon=100)
    restored.load_state_dict(ctl.state_dict())
    assert restored.value == ctl.value


def test_sample_layers_modes():
    rng = lambda: np.random.default_rng(3)  # noqa: E731
    assert sample_layers("fixed", 3, rng(), 4, layer=2) == [2, 2, 2]
    uniform = sample_layers("uniform", 400, rng(), 4)
    assert set(uniform) == {0, 1, 2, 3, 4}  # all N+1 hidden states, the embedding output too
    assert uniform == sample_layers("uniform", 400, rng(), 4)  # seeded
    grouped = sample_layers("groups", 400, rng(), 24, groups={"late": [20, 24], "early": [0, 1]})
    assert set(grouped) == {0, 1, 20, 21, 22, 23, 24}
    with pytest.raises(IcetError, match="out of range 0..4"):
        sample_layers("fixed", 1, rng(), 4, layer=5)
    with pytest.raises(IcetError, match=r"groups.x\[1\]"):
        sample_layers("groups", 1, rng(), 4, groups={"x": [0, 9]})
    assert list(by_layer([3, 0, 3, 1])) == [(0, [1]), (1, [3]), (3, [0, 2])]


def test_params_defaults_come_from_the_config_schema():
    """One source of defaults: what a dict leaves out is the schema's, as a run's config gets."""
    schema = schemas.node("config", "lppo")["properties"]
    p = LppoParams.from_dict({"lora": {"r": 4}, "groups": {"early": [1, 2]}})
    for key in ("steps", "minibatch", "ppo_epochs", "lr", "eta", "gamma", "lam", "clip",
                "clip_value", "c1", "c2", "max_grad_norm", "warmup_steps", "value_trains_lm",
                "layer_mode", "checkpoint_every", "keep_checkpoints"):
        assert getattr(p, key) == schema[key]["default"], key
    lora = schema["lora"]["properties"]
    assert p.lora == {"r": 4, "alpha": lora["alpha"]["default"], "dropout": 0.0,
                      "target_modules": lora["target_modules"]["default"]}
    assert not p.full_finetune and p.groups == {"early": [1, 2]}


def test_params_validation():
    with pytest.raises(IcetError, match="groups.*needs at least one group"):
        LppoParams.from_dict({"layer_mode": "groups"})
    with pytest.raises(IcetError, match="unknown key.*colour"):
        LppoParams.from_dict({"colour": 1})
    with pytest.raises(IcetError, match="minibatch = 3.*divide rollout_batch"):
        LppoParams.from_dict({"rollout_batch": 8, "minibatch": 3})
    with pytest.raises(IcetError, match="layer_mode"):
        LppoParams.from_dict({"layer_mode": "random"})
