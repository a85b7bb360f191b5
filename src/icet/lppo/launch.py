"""L-PPO as a cluster job runs it: one trainer process per GPU, started by torch's launcher.

Snakemake runs a rule's script as one Python process. A model whose `resources.gpu` is N > 1
gets N GPUs from SLURM, so the job starts N trainer processes with `torch.distributed.run`
(torchrun), each one data-parallel rank: its own share of the RT prompts, gradients averaged
by DDP (accelerate picks nccl on GPUs, gloo on CPU), checkpoints and the one adapter written
by rank 0 (icet.lppo.trainer). `--standalone` lets torchrun pick a free rendezvous port, so
two jobs on one node do not collide. `resources.processes` overrides the count, which lets a
CPU run rehearse the multi-process launch (gloo) without a GPU.

The process count changes the run (rollout_batch is per process), so checkpoints record it
and a resume with another count is refused (trainer.check_resume).

Imports stay light (no torch): the workflow imports `processes_for` at parse time.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from icet.errors import IcetError
from icet.io import write_json


def processes_for(resources: dict[str, Any]) -> int:
    """Trainer processes for a model's resources: `processes` if set, else one per GPU (>= 1)."""
    count = resources.get("processes") or resources.get("gpu") or 1
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise IcetError(f"resources: processes/gpu = {count!r} must be an integer >= 1")
    return count


def launch_command(job_json: str | os.PathLike, processes: int) -> list[str]:
    """The command that runs the trainer on `processes` ranks from a job file (`write_job`)."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc-per-node={int(processes)}", "-m", "icet.lppo.trainer",
            "--job", str(job_json)]


def write_job(path: str | os.PathLike, **job: Any) -> Path:
    """The keyword arguments of trainer.train_lppo_job, as JSON (no secrets in it)."""
    write_json(path, job)
    return Path(path)


def run_lppo_job(model_dir: str, rt_jsonl: str, out_dir: str, *, params: dict,
                 reward_model_dir: str, reward: dict | None = None, seed: int = 0,
                 device: str = "auto", threads: int = 1, processes: int = 1,
                 prompting: dict | None = None, num_layers: int | None = None,
                 tuning: dict | None = None, log: str | None = None) -> None:
    """The workflow's entry (rule lppo_train): in this process for one rank, else `processes`
    ranks through torchrun, each with `threads` // `processes` CPU threads (at least 1).

    `tuning` ({"lppo": {...}, "reward": {...}}) holds the speed and memory keys the rule
    passes apart from `params` and `reward` (batch sizes, gradient checkpointing: schema
    x-tuning, icet.config.split_tuning); they join them here, and a resume may change them."""
    from icet.config import with_tuning
    from icet.io import read_jsonl
    from icet.lengths import check_dataset
    from icet.lppo.config import fill_lppo

    rows = read_jsonl(rt_jsonl, required=("id", "prompt"))
    rollout = fill_lppo({k: v for k, v in params.items() if k != "groups"})["max_new_tokens"]
    check_dataset(model_dir, rt_jsonl, rows, rollout, "lppo.max_new_tokens")  # before weights
    tuning = tuning or {}
    params = with_tuning(dict(params), tuning.get("lppo"))
    reward = with_tuning(reward, tuning.get("reward")) if reward is not None else tuning.get("reward")
    job = dict(model_dir=str(model_dir), rt_jsonl=str(rt_jsonl), out_dir=str(out_dir),
               params=dict(params), reward_model_dir=str(reward_model_dir), reward=reward,
               seed=int(seed), device=device, prompting=prompting,
               num_layers=None if num_layers is None else int(num_layers),
               log=None if log is None else str(log))
    if int(processes) == 1:
        from icet.lppo.trainer import train_lppo_job

        train_lppo_job(**job, threads=threads)
        return
    job["threads"] = max(1, int(threads) // int(processes))
    with tempfile.TemporaryDirectory(prefix="icet-lppo-") as tmp:
        command = launch_command(write_job(Path(tmp) / "job.json", **job), processes)
        returncode = _run_forwarding_stop(command)
    if returncode != 0:
        raise IcetError(f"L-PPO on {processes} processes failed (exit {returncode}); "
                        f"the failing rank's error is in {log or 'stderr'}")


def _run_forwarding_stop(command: list[str]) -> int:
    """Run the launcher; a SIGTERM or Ctrl-C to this process reaches every rank.

    torchrun starts its ranks in sessions of their own, so a signal to this job's process
    group alone would leave them training; torchrun passes the SIGTERM we send it on to
    each rank. Checkpoints are atomic folders, so the finished ones survive the stop.
    """
    proc = subprocess.Popen(command)

    def forward(signum, frame):
        proc.send_signal(signal.SIGTERM)

    installed, previous = False, None
    try:
        previous, installed = signal.signal(signal.SIGTERM, forward), True
    except ValueError:  # not the main thread: leave signals alone
        pass
    try:
        return proc.wait()
    except BaseException:  # KeyboardInterrupt, or a stop raised by another handler
        proc.send_signal(signal.SIGTERM)
        proc.wait()
        raise
    finally:
        if installed:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
