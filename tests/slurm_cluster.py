"""A real one-node SLURM cluster on this machine, for tests: munged, slurmctld and slurmd
started as root without systemd, two fake GPUs, everything under one folder.

    with SlurmCluster(tmp_path) as cluster:
        subprocess.run(["sbatch", "--wrap", "hostname"], env=cluster.env)

Or by hand (root): `python tests/slurm_cluster.py /tmp/cluster` starts one and waits for
Ctrl-C. Traps measured on Debian 12 (slurm-wlm 22.05): slurmd rejects plain files as GPU
devices (we mknod character devices with /dev/null's numbers); AccountingStorageTRES=gres/gpu
makes slurmctld exit without slurmdbd (we leave it out); without slurmdbd `sacct` fails, so
the snakemake plugin must poll squeue, and squeue only sees a finished job for MinJobAge.
"""

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "srun", "squeue", "sinfo", "scontrol")
PARTITION = "debug"
GPUS = 2
# squeue forgets a finished job MinJobAge seconds after it ends: keep it >= 3x the plugin's
# slurm-init-seconds-before-status-checks, or the plugin silently falls back to sacct.
MIN_JOB_AGE = 300


def missing_binaries() -> list[str]:
    return [b for b in BINARIES if shutil.which(b) is None and not Path("/usr/sbin", b).exists()]


def _binary(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _memory_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    raise RuntimeError("no MemTotal in /proc/meminfo")


class SlurmCluster:
    """Start munged, slurmctld and slurmd under `root`; stop exactly those processes."""

    def __init__(self, root: Path, cpus: int | None = None):
        self.root = Path(root)
        self.cpus = cpus or os.cpu_count() or 1
        self.node = socket.gethostname().split(".")[0]
        self.procs: list[subprocess.Popen] = []
        self.conf = self.root / "etc" / "slurm.conf"
        self.task_log = self.root / "task-env.log"  # one line per task: job id, GPU env
        self.env = {**os.environ, "SLURM_CONF": str(self.conf),
                    "PATH": f"{self.root / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"}

    # -- files -----------------------------------------------------------------------------

    def _write_files(self) -> None:
        for sub in ("etc", "munge", "state", "spool", "log", "run", "dev"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(self.root / "munge", 0o700)
        key = self.root / "munge" / "munge.key"
        key.write_bytes(secrets.token_bytes(1024))
        os.chmod(key, 0o400)
        devices = []
        null = os.stat("/dev/null").st_rdev
        for i in range(GPUS):
            dev = self.root / "dev" / f"nvidia{i}"
            if not dev.exists():
                os.mknod(dev, 0o666 | 0o020000, null)  # S_IFCHR: slurmd rejects plain files
            devices.append(str(dev))
        prolog = self.root / "etc" / "task-prolog.sh"
        prolog.write_text(
            "#!/bin/sh\n"
            'echo "job=$SLURM_JOB_ID step=$SLURM_STEP_ID gpus=$SLURM_JOB_GPUS '
            f'cuda=$CUDA_VISIBLE_DEVICES" >> {self.task_log}\n')
        os.chmod(prolog, 0o755)
        # The jobstep plugin strips SLURM_* (SLURM_CONF too) from the srun it runs inside a
        # job; a site keeps slurm.conf in /etc/slurm, we keep ours private: srun on PATH finds it.
        (self.root / "bin").mkdir(exist_ok=True)
        srun = self.root / "bin" / "srun"
        srun.write_text(f'#!/bin/sh\nSLURM_CONF={self.conf} exec {_binary("srun")} "$@"\n')
        os.chmod(srun, 0o755)
        (self.root / "etc" / "gres.conf").write_text(
            f"NodeName={self.node} Name=gpu File={self.root}/dev/nvidia[0-{GPUS - 1}]\n")
        memory = max(1024, _memory_mb() - 1024)
        self.conf.write_text(f"""\
ClusterName=icet-test
SlurmctldHost={self.node}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={self.root}/run/munge.socket
CredType=cred/munge
StateSaveLocation={self.root}/state
SlurmdSpoolDir={self.root}/spool
SlurmctldPidFile={self.root}/run/slurmctld.pid
SlurmdPidFile={self.root}/run/slurmd.pid
SlurmctldLogFile={self.root}/log/slurmctld.log
SlurmdLogFile={self.root}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
TaskProlog={prolog}
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
ReturnToService=2
MinJobAge={MIN_JOB_AGE}
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
GresTypes=gpu
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={memory} Gres=gpu:{GPUS} State=UNKNOWN
PartitionName={PARTITION} Nodes={self.node} Default=YES MaxTime=INFINITE State=UP
""")

    # -- processes ---------------------------------------------------------------------------

    def _spawn(self, *command: str) -> None:
        log = open(self.root / "log" / f"{Path(command[0]).name}.out", "ab")
        self.procs.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                           env=self.env, start_new_session=True))

    def start(self, timeout: float = 60) -> "SlurmCluster":
        if os.geteuid() != 0:
            raise RuntimeError("a test SLURM cluster needs root (daemons run as root)")
        if missing := missing_binaries():
            raise RuntimeError(f"missing SLURM/munge binaries: {', '.join(missing)} "
                               "(scripts/install-system-packages)")
        self._write_files()
        m = self.root / "munge"
        self._spawn(_binary("munged"), "--foreground", "--force",
                    f"--socket={self.root}/run/munge.socket", f"--key-file={m}/munge.key",
                    f"--pid-file={self.root}/run/munged.pid", f"--seed-file={m}/munged.seed",
                    f"--log-file={self.root}/log/munged.log")
        self._wait(lambda: (self.root / "run" / "munge.socket").exists(), timeout, "munged")
        self._spawn(_binary("slurmctld"), "-D", "-i", "-f", str(self.conf))
        self._spawn(_binary("slurmd"), "-D", "-N", self.node, "-f", str(self.conf))
        self._wait(self._node_idle, timeout, "an idle node")
        return self

    def _node_idle(self) -> bool:
        out = subprocess.run([_binary("sinfo"), "-h", "-N", "-o", "%T"], env=self.env,
                             capture_output=True, text=True)
        return out.returncode == 0 and out.stdout.strip() == "idle"

    def _wait(self, ready, timeout: float, what: str) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if ready():
                return
            if dead := [p.args[0] for p in self.procs if p.poll() is not None]:
                raise RuntimeError(f"{', '.join(dead)} exited while waiting for {what}; "
                                   f"logs in {self.root / 'log'}:\n{self.logs()}")
            time.sleep(0.2)
        raise RuntimeError(f"timed out waiting for {what}; logs:\n{self.logs()}")

    def logs(self, tail: int = 3000) -> str:
        return "\n".join(f"== {p.name}\n{p.read_text(errors='replace')[-tail:]}"
                         for p in sorted((self.root / "log").glob("*")) if p.is_file())

    def scontrol_job(self, job_id: str) -> dict[str, str]:
        """`scontrol show job -d` as key=value pairs (finished jobs stay MinJobAge s)."""
        out = subprocess.run([_binary("scontrol"), "-d", "-o", "show", "job", job_id],
                             env=self.env, capture_output=True, text=True, check=True).stdout
        return dict(f.split("=", 1) for f in out.split() if "=" in f)

    def stop(self) -> None:
        """Stop our daemons (slurmd first, munged last), by the pids we started."""
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.procs.clear()

    def __enter__(self) -> "SlurmCluster":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()


if __name__ == "__main__":
    with SlurmCluster(Path(sys.argv[1])) as cluster:
        print(f"export SLURM_CONF={cluster.conf}   # Ctrl-C stops the cluster", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
