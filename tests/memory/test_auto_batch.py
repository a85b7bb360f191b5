"""`sweep.batch_size: auto` keeps to the memory it is given, at scaled sizes on a CPU.

The first cluster run's two failures, reproduced small: Llama-3.2-Vision's vision pass held
every local layer's state of every image of a batch (about 100 images on an 80 GB card; more
than the card), and LLaVA's batch was sized for the first prompt while longer ones came later.
Here the free memory the engine sees is set (icet.engine.free_bytes), the engine plans its
batches, and the peak it reaches, measured (icet.memory.measure), must stay within it.
"""

from __future__ import annotations

import pytest
import torch

import icet.engine
from icet.engine import fast_sweep
from icet.memory.measure import cpu_peak


def sized(monkeypatch, free: int) -> None:
    monkeypatch.setattr(icet.engine, "free_bytes", lambda device: free, raising=False)


@pytest.fixture(scope="module")
def mllama(tmp_path_factory):
    from icet.bench import mllama11b

    adapter = mllama11b.build_adapter("scaled", "cpu", torch.bfloat16, tmp_path_factory.mktemp("mllama"))
    return adapter, mllama11b.bench_inputs(adapter, 8)


@pytest.fixture(scope="module")
def llava(tmp_path_factory):
    from icet.bench import vlm7b

    adapter = vlm7b.build_adapter("scaled", "cpu", torch.bfloat16, tmp_path_factory.mktemp("llava"))
    return adapter, vlm7b.bench_inputs(adapter, 12)


def test_mllama_vision_pass_stays_within_the_free_memory(mllama, monkeypatch):
    """8 images at 3 layers: the whole batch's vision pass (~41 MB at this scale) does not fit
    30 MB; run in sub-batches it does."""
    adapter, (prompts, images) = mllama
    free = 30_000_000
    sized(monkeypatch, free)
    peak, out = cpu_peak(lambda: fast_sweep(adapter, prompts, images, [1, 4, 8], max_new_tokens=4))
    assert sorted(out) == [1, 4, 8] and all(len(rows) == 8 for rows in out.values())
    assert peak <= free, f"peak {peak / 1e6:.1f} MB > {free / 1e6:.1f} MB free"


def test_llava_batch_is_sized_for_the_longest_prompt(llava, monkeypatch):
    """The first prompt is short, the others ten times longer (MR's range): rows sized for the
    first would overflow once the long ones are batched."""
    adapter, (prompts, images) = llava
    long = [" ".join((p.split() * 12)[:160]) for p in prompts[1:]]
    prompts = [prompts[0].split()[0]] + long
    free = 50_000_000
    sized(monkeypatch, free)
    peak, out = cpu_peak(lambda: fast_sweep(adapter, prompts, images, [2], max_new_tokens=4))
    assert len(out[2]) == 12
    assert peak <= free, f"peak {peak / 1e6:.1f} MB > {free / 1e6:.1f} MB free"


def test_the_plan_follows_the_longest_row(llava, monkeypatch):
    """Rows planned for a data set are those of its longest prompt, wherever it comes."""
    from icet.engine import plan_batch

    adapter, (prompts, _) = llava
    sized(monkeypatch, 50_000_000)
    long = " ".join(prompts[1].split() * 12)
    short_only = plan_batch("auto", adapter, prompts[:3], [2], 16)[0]
    mixed = plan_batch("auto", adapter, prompts[:3] + [long], [2], 16)[0]
    assert mixed == plan_batch("auto", adapter, [long], [2], 16)[0] < short_only
    assert plan_batch(7, adapter, prompts, [2], 16)[0] == 7  # a number is taken as given


def test_one_row_that_cannot_fit_is_one_line(llava, monkeypatch):
    from icet.errors import IcetError

    adapter, (prompts, images) = llava
    sized(monkeypatch, 1_000_000)
    with pytest.raises(IcetError, match=r"one row of \d+ \+ 4 positions needs .* GB beyond the weights"):
        fast_sweep(adapter, prompts, images, [2], max_new_tokens=4)
