"""icet.lppo.launch: the process count and the launcher's stop handling (no training here;
tests/lppo/test_lppo_trainer.py trains with 2 processes)."""

import signal
import subprocess
import sys
import time

import pytest

from icet.errors import IcetError
from icet.lppo.launch import _run_forwarding_stop, launch_command, processes_for

# Stands in for torchrun: waits for a SIGTERM, records it, exits 3.
CHILD = """
import signal, sys, time
def stop(signum, frame):
    open(sys.argv[1], "w").write("stopped")
    sys.exit(3)
signal.signal(signal.SIGTERM, stop)
open(sys.argv[2], "w").write("ready")
time.sleep(30)
"""


def test_processes_one_per_gpu_unless_set():
    assert processes_for({"gpu": 0}) == 1
    assert processes_for({"gpu": 4}) == 4
    assert processes_for({"gpu": 0, "processes": 2}) == 2
    assert processes_for({"gpu": 2, "processes": None}) == 2
    with pytest.raises(IcetError, match="processes/gpu"):
        processes_for({"gpu": 1, "processes": "2"})


def test_launch_command_runs_the_trainer_on_n_ranks(tmp_path):
    command = launch_command(tmp_path / "job.json", 3)
    assert command[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert "--standalone" in command and "--nproc-per-node=3" in command
    assert command[-4:] == ["-m", "icet.lppo.trainer", "--job", str(tmp_path / "job.json")]


def test_sigterm_to_the_job_reaches_the_launcher(tmp_path):
    """SLURM or Snakemake stopping the job (SIGTERM to its process only) must stop torchrun,
    which passes it on to every rank."""
    stopped, ready = tmp_path / "stopped", tmp_path / "ready"
    job = ("import sys\nfrom icet.lppo.launch import _run_forwarding_stop\n"
           f"sys.exit(_run_forwarding_stop([sys.executable, '-c', {CHILD!r}, "
           f"{str(stopped)!r}, {str(ready)!r}]))")
    proc = subprocess.Popen([sys.executable, "-c", job])
    deadline = time.monotonic() + 60
    while not ready.exists():
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 3  # the launcher's exit status comes back
    assert stopped.read_text() == "stopped"
