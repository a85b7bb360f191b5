"""`snakemake --profile slurm` on a real one-node SLURM cluster (tests/slurm_cluster.py).

A slice of the toy DAG (tests/data/toy-slurm.yaml) runs locally first; a copy of that
working directory then loses the safety-tuned model and everything after it, and SLURM
redoes those jobs through sbatch: a training rule, a sweep shard (a GPU rule), scoring and
the per-layer table. Its table must equal the local run's byte for byte. Needs root and
the Debian packages of system-packages.txt: skipped without them, except in CI (CI=true),
where a missing cluster is a failure.
"""

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from slurm_cluster import SlurmCluster, missing_binaries

ROOT = Path(__file__).resolve().parents[2]
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
CONFIGS = [ROOT / "toy" / "toy.yaml", ROOT / "tests" / "data" / "toy-ci.yaml",
           ROOT / "tests" / "data" / "toy-slurm.yaml"]
RUN = "results/toy-slurm"
TABLES = ["tables/layers.csv", "tables/layers.md"]
# Removed from the copy, so SLURM recomputes them (and nothing upstream).
REDONE = ["resources/toy/organism/safety", RUN]
SLURM_RULES = {"train_toy_stage", "sweep_shard", "score_testset", "table_layers"}

pytestmark = [pytest.mark.slurm, pytest.mark.xdist_group("slurm")]


def _unavailable() -> str | None:
    if os.geteuid() != 0:
        return "the test cluster's daemons run as root"
    if missing := missing_binaries():
        return f"missing {', '.join(missing)}: run scripts/install-system-packages as root"
    return None


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if reason := _unavailable():
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the SLURM test: {reason}")
        pytest.skip(reason)
    with SlurmCluster(tmp_path_factory.mktemp("slurm-cluster")) as running:
        yield running


def test_profile_derived_for_the_test_cluster_overrides_only_timing(tmp_path):
    """The test profile is ours with timing and log paths changed, nothing else."""
    ours = yaml.safe_load((ROOT / "slurm" / "config.yaml").read_text())
    derived = yaml.safe_load((test_profile(tmp_path, tmp_path) / "config.yaml").read_text())
    changed = {k for k in ours if ours[k] != derived[k]}
    assert changed <= {"latency-wait", "retries", "slurm-init-seconds-before-status-checks",
                       "slurm-logdir", "slurm-keep-successful-logs", "jobs"}
    assert derived["executor"] == "slurm" and derived["slurm-status-command"] == "squeue"
    assert derived["default-resources"] == ours["default-resources"]


def test_profile_makes_no_sacct_trap():
    """squeue polling needs MinJobAge >= 3x the first status check delay."""
    from slurm_cluster import MIN_JOB_AGE

    ours = yaml.safe_load((ROOT / "slurm" / "config.yaml").read_text())
    assert ours["slurm-status-command"] == "squeue"
    assert MIN_JOB_AGE >= 3 * ours["slurm-init-seconds-before-status-checks"]
    assert "slurm_account" in ours["default-resources"]  # from the environment, not a name


def test_partition_unset_with_no_default_partition_is_one_clear_line(monkeypatch):
    from icet import slurm
    from icet.errors import IcetError

    monkeypatch.delenv(slurm.PARTITION_VAR, raising=False)
    monkeypatch.setattr(slurm, "_query", lambda *cmd: "gpu\ncpu\n")
    slurm.partition.cache_clear()
    with pytest.raises(IcetError, match="export ICET_SLURM_PARTITION="):
        slurm.partition()
    monkeypatch.setattr(slurm, "_query", lambda *cmd: "gpu\ncpu*\n")
    slurm.partition.cache_clear()
    assert slurm.partition() == "cpu"
    monkeypatch.setenv(slurm.PARTITION_VAR, "big")
    slurm.partition.cache_clear()
    assert slurm.partition() == "big"
    slurm.partition.cache_clear()


def test_account_needed_only_where_enforced(monkeypatch):
    from icet import slurm
    from icet.errors import IcetError

    monkeypatch.delenv(slurm.ACCOUNT_VAR, raising=False)
    monkeypatch.setattr(slurm, "_query", lambda *c: "AccountingStorageEnforce = none\n")
    slurm.account.cache_clear()
    assert slurm.account() == ""
    monkeypatch.setattr(slurm, "_query",
                        lambda *c: "AccountingStorageEnforce = associations,limits\n")
    slurm.account.cache_clear()
    with pytest.raises(IcetError, match="export ICET_SLURM_ACCOUNT="):
        slurm.account()
    slurm.account.cache_clear()


def test_profile(folder: Path, workdir: Path) -> Path:
    """Our slurm profile with only what a test cluster needs changed: fast status checks,
    no retries (a failure should show at once), logs in the test's folder."""
    profile = yaml.safe_load((ROOT / "slurm" / "config.yaml").read_text())
    profile.update({"latency-wait": 5, "retries": 0, "slurm-init-seconds-before-status-checks": 2,
                    "slurm-logdir": str(workdir / "logs" / "slurm"),
                    "slurm-keep-successful-logs": True})
    out = folder / "profile"
    out.mkdir(exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    return out


test_profile.__test__ = False  # a helper, not a test


def snakemake(workdir: Path, profile: str, env: dict, timeout: int) -> subprocess.CompletedProcess:
    """Run snakemake; on a hang, SIGINT (the plugin ignores SIGTERM), then SIGKILL."""
    command = [SNAKEMAKE, "--profile", profile, "--snakefile", str(ROOT / "Snakefile"),
               "--directory", str(workdir), "--configfile", *map(str, CONFIGS),
               "--until", "table_layers"]
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
        pytest.fail(f"snakemake {profile} hung for {timeout}s:\n{out[-4000:]}")
    return subprocess.CompletedProcess(command, proc.returncode, out, "")


def test_toy_slice_through_sbatch_matches_a_local_run(cluster, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "ICET_NO_PROGRESS": "1"}
    local = tmp_path / "local"
    result = snakemake(local, "toy", env, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:]

    remote = tmp_path / "slurm"
    shutil.copytree(local, remote, symlinks=True)
    for name in REDONE:
        shutil.rmtree(remote / name)
    profile = test_profile(tmp_path, remote)
    result = snakemake(remote, str(profile),
                       {**env, **cluster.env, "ICET_SLURM_PARTITION": "debug"}, timeout=600)
    assert result.returncode == 0, f"{result.stdout[-6000:]}\n{cluster.logs()}"

    # Every job went through sbatch with its rule's resources.
    jobs = [cluster.scontrol_job(j) for j in _job_ids(cluster)]
    by_rule = {job["Comment"].split("_wildcards")[0].removeprefix("rule_"): job for job in jobs}
    assert set(by_rule) == SLURM_RULES, [j.get("Comment") for j in jobs]
    assert all(j["JobState"] == "COMPLETED" and j["Partition"] == "debug" for j in jobs)
    sweep = by_rule["sweep_shard"]
    assert sweep["TresPerJob"] == "gres:gpu:1"
    assert "cpu=1," in sweep["TRES"] and "mem=2000M" in sweep["TRES"]  # the model's resources
    assert sweep["TimeLimit"] == "00:10:00"
    assert "gpu" not in by_rule["score_testset"].get("TresPerJob", "")
    # slurmd gave the GPU job one of the two fake GPUs: CUDA_VISIBLE_DEVICES in its tasks.
    env_lines = cluster.task_log.read_text().splitlines()
    sweep_tasks = [l for l in env_lines if l.startswith(f"job={sweep['JobId']} ")]
    assert sweep_tasks and all(l.split("cuda=")[1] in ("0", "1") for l in sweep_tasks)
    score_tasks = [l for l in env_lines if l.startswith(f"job={by_rule['score_testset']['JobId']} ")]
    assert score_tasks and all(l.endswith("cuda=") for l in score_tasks)

    for name in TABLES:
        assert (remote / RUN / name).read_bytes() == (local / RUN / name).read_bytes(), name
    print(f"SLURM: {len(jobs)} jobs through sbatch ({', '.join(sorted(by_rule))}); "
          "table equals the local run's")


def _rules_of(jobs: list[dict]) -> dict[str, list[dict]]:
    by_rule: dict[str, list[dict]] = {}
    for job in jobs:
        by_rule.setdefault(job["Comment"].split("_wildcards")[0].removeprefix("rule_"), []).append(job)
    return by_rule


def test_rehearsal_slice_through_sbatch(cluster, tmp_path):
    """The paper config path through `--profile slurm`: downloads from the mirror
    as local rules on the login node, then the AdvBench build, a LLaVA-1.5 sweep shard on a
    (fake) GPU, its scoring by the mirror's Llama Guard, GPT-2 RM and Detoxify, and the
    per-layer table as sbatch jobs."""
    from icet.mirror.rehearse import rehearse

    before = set(_job_ids(cluster))
    workdir = tmp_path / "rehearsal"
    profile = test_profile(tmp_path, workdir)
    status = rehearse(workdir, [ROOT / "rehearsal" / "rehearsal.yaml",
                                ROOT / "tests" / "data" / "rehearsal-ci.yaml",
                                ROOT / "tests" / "data" / "rehearsal-slurm.yaml"],
                      verify=False, snakemake_args=["--until", "table_layers"], timeout=900,
                      profile=profile, env={**cluster.env, "ICET_SLURM_PARTITION": "debug"})
    assert status == 0, cluster.logs()
    jobs = [cluster.scontrol_job(j) for j in _job_ids(cluster) if j not in before]
    by_rule = _rules_of(jobs)
    assert {"build_advbench", "sweep_shard", "score_testset", "table_layers"} <= set(by_rule), \
        sorted(by_rule)
    assert not {r for r in by_rule if r.startswith("download")}  # local rules: the login node
    assert all(j["JobState"] == "COMPLETED" for j in jobs)
    assert all(j["TresPerJob"] == "gres:gpu:1" for j in by_rule["sweep_shard"])
    layers = (workdir / "results" / "rehearsal-slurm" / "tables" / "layers.csv").read_text()
    assert "llava-1.5-7b" in layers
    print(f"SLURM rehearsal: {len(jobs)} jobs through sbatch ({', '.join(sorted(by_rule))})")


def _job_ids(cluster: SlurmCluster) -> list[str]:
    out = subprocess.run(["squeue", "-t", "all", "-h", "-o", "%i"], env=cluster.env,
                         capture_output=True, text=True, check=True).stdout
    return out.split()
