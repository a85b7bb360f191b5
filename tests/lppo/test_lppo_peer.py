"""L-PPO's arithmetic against a peer: trl 0.11.x's classic PPOTrainer.

trl 1.13+ has no PPOTrainer, and trl is not a dependency, so the peer is written here from
its documented definitions (trl 0.11's `PPOTrainer.compute_rewards`, `compute_advantages`
and `loss`, and `trl.core.masked_mean / masked_var / masked_whiten`), as formulas, not as
its code:

- per-token KL (kl_penalty "kl", k1): logp - logp_ref; reward = -kl_coef * kl on every
  token, plus the score at the last non-masked token;
- GAE over values * mask and rewards * mask, gamma and lam; returns = advantages + values;
  advantages whitened over the masked tokens with the *unbiased* variance (Bessel);
- policy loss masked_mean(max(-A * ratio, -A * clip(ratio, 1 - eps, 1 + eps))), its clip
  fraction the share of tokens where the clipped term is larger;
- value loss 0.5 * masked_mean(max((V - R)^2, (clip(V, V_old - c, V_old + c) - R)^2)) and
  its clip fraction alike; approx KL 0.5 * masked_mean((logp - logp_old)^2).

Ours must agree to 1e-6 on identical tensors; the one documented difference, the
population variance in the whitening, is converted (docs/measures.md lists the rest).
"""

from __future__ import annotations

import pytest
import torch

from icet.lppo.losses import (gae, kl_penalised_rewards, masked_mean, masked_whiten,
                              ppo_clip_loss, value_loss)


def peer_masked_mean(x, mask):
    return (x * mask).sum() / mask.sum()


def peer_whiten(x, mask, eps=1e-8):
    mean = peer_masked_mean(x, mask)
    n = mask.sum()
    var = peer_masked_mean((x - mean) ** 2, mask) * n / (n - 1)  # unbiased
    return (x - mean) * torch.rsqrt(var + eps)


def peer_step(scores, logp, logp_ref, logp_new, v_old, v_new, mask, kl_coef, gamma, lam, eps, c):
    """trl 0.11's quantities from their definitions (module docstring), row by row where trl
    loops over rows."""
    batch, steps = logp.shape
    rewards = torch.zeros_like(logp)
    for row in range(batch):
        kl = logp[row] - logp_ref[row]
        rewards[row] = -kl_coef * kl
        last = int(mask[row].nonzero()[-1])
        rewards[row, last] += scores[row]
    values, masked_rewards = v_old * mask, rewards * mask
    last_gae = torch.zeros(batch)
    reversed_advantages = []
    for t in reversed(range(steps)):
        next_values = values[:, t + 1] if t < steps - 1 else torch.zeros(batch)
        delta = masked_rewards[:, t] + gamma * next_values - values[:, t]
        last_gae = delta + gamma * lam * last_gae
        reversed_advantages.append(last_gae)
    advantages = torch.stack(reversed_advantages[::-1], dim=1)
    returns = advantages + values
    whitened = peer_whiten(advantages, mask)
    ratio = torch.exp(logp_new - logp)
    pg1, pg2 = -whitened * ratio, -whitened * torch.clamp(ratio, 1 - eps, 1 + eps)
    v_clipped = torch.clamp(v_new, values - c, values + c)
    vf1, vf2 = (v_new - returns) ** 2, (v_clipped - returns) ** 2
    return {"rewards": rewards, "kl": logp - logp_ref, "advantages_raw": advantages,
            "returns": returns, "advantages": whitened,
            "pg_loss": peer_masked_mean(torch.max(pg1, pg2), mask),
            "pg_clipfrac": peer_masked_mean(torch.gt(pg2, pg1).double(), mask),
            "vf_loss": 0.5 * peer_masked_mean(torch.max(vf1, vf2), mask),
            "vf_clipfrac": peer_masked_mean(torch.gt(vf2, vf1).double(), mask),
            "approx_kl": 0.5 * peer_masked_mean((logp_new - logp) ** 2, mask)}


@pytest.mark.numerics
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_our_step_agrees_with_trls_classic_ppo(seed):
    torch.set_default_dtype(torch.float64)  # 1e-6 is about the arithmetic, not fp32 rounding
    try:
        g = torch.Generator().manual_seed(seed)
        batch, steps = 5, 9
        lengths = torch.randint(1, steps + 1, (batch,), generator=g)
        lengths[0] = steps  # one full row, one single-token row
        lengths[1] = 1
        mask = (torch.arange(steps)[None] < lengths[:, None]).double()
        def noise(scale=1.0):
            return torch.randn(batch, steps, generator=g) * scale
        logp, logp_ref = -noise().abs() * mask, -noise().abs() * mask
        logp_new = (logp + noise(0.3)) * mask  # ratios beyond 1 +- 0.2 on both sides
        v_old, v_new = noise(2.0) * mask, noise(2.0) * mask
        scores = torch.randn(batch, generator=g) * 3
        kl_coef, gamma, lam, eps, c = 0.1, 1.0, 0.95, 0.2, 0.2
        peer = peer_step(scores, logp, logp_ref, logp_new, v_old, v_new, mask,
                         kl_coef, gamma, lam, eps, c)

        rewards, kl = kl_penalised_rewards(scores.tolist(), logp, logp_ref, mask, kl_coef)
        advantages, returns = gae(rewards, v_old, mask, gamma, lam)
        whitened = masked_whiten(advantages, mask)
        pg, pg_clip = ppo_clip_loss(logp_new, logp, whitened, mask, eps)
        vf, vf_clip = value_loss(v_new, v_old, returns, mask, c)
        on = mask.bool()

        def same(ours, theirs):
            torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)

        same(kl[on], peer["kl"][on])
        same(rewards[on], peer["rewards"][on])
        same(advantages[on], peer["advantages_raw"][on])
        same(returns[on], peer["returns"][on])
        # whitening: ours divides by the population std, trl's by the unbiased one
        n = mask.sum()
        same(whitened[on] * torch.sqrt((n - 1) / n), peer["advantages"][on])
        # the losses on trl's own (unbiased) whitening, so they compare like for like
        pg, pg_clip = ppo_clip_loss(logp_new, logp, peer["advantages"], mask, eps)
        same(pg, peer["pg_loss"])
        same(pg_clip, peer["pg_clipfrac"])
        same(vf, peer["vf_loss"])
        same(vf_clip, peer["vf_clipfrac"])
        assert 0 < float(pg_clip) < 1 and 0 < float(vf_clip) < 1  # both clips bite somewhere
        same(0.5 * masked_mean((logp_new - logp) ** 2, mask), peer["approx_kl"])
    finally:
        torch.set_default_dtype(torch.float32)
