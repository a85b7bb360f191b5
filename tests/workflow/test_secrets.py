"""HF_TOKEN only where needed: a cluster job (Snakemake's remote mode) never
sees it, a local job still does (downloads are local rules), and neither a log line nor a
traceback ever shows its value."""

import os
import secrets
import subprocess
import sys
import textwrap
from pathlib import Path

import icet

ROOT = Path(__file__).resolve().parents[2]
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
SENTINEL = f"hf_sentinel{secrets.token_hex(12)}"


def _env() -> dict:
    return {**os.environ, "HF_TOKEN": SENTINEL, "HUGGING_FACE_HUB_TOKEN": SENTINEL,
            "HF_HUB_OFFLINE": "1",
            "PYTHONPATH": os.pathsep.join([str(Path(icet.__file__).parents[1]),
                                           os.environ.get("PYTHONPATH", "")])}


def test_a_cluster_job_never_sees_the_token_a_local_job_does(tmp_path):
    """The SLURM executor exports everything (sbatch --export=ALL); the job's Snakemake runs
    in remote mode and parses rules/common.smk before any rule's process starts."""
    (tmp_path / "Snakefile").write_text(textwrap.dedent(f"""
        include: "{ROOT / 'rules' / 'common.smk'}"

        rule envcheck:
            output: "env.txt"
            shell: "env | grep -c -e '^HF_TOKEN=' -e '^HUGGING_FACE_HUB_TOKEN=' > {{output}} || true"
    """))
    base = [SNAKEMAKE, "-s", "Snakefile", "--configfile", str(ROOT / "config.yaml"),
            str(ROOT / "toy" / "toy.yaml"), "--cores", "1", "--allowed-rules", "envcheck"]
    runs = {"remote": ["--mode", "remote", "--target-jobs", "envcheck:"], "local": ["env.txt"]}
    seen = {}
    for mode, args in runs.items():
        (tmp_path / "env.txt").unlink(missing_ok=True)
        result = subprocess.run(base + args, cwd=tmp_path, env=_env(), capture_output=True,
                                text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        seen[mode] = int((tmp_path / "env.txt").read_text())
    assert seen == {"remote": 0, "local": 2}


CHILD = textwrap.dedent("""
    import sys
    from icet.logs import setup_logging

    logger = setup_logging(sys.argv[1], "test")
    token = sys.argv[2]
    logger.info("calling the hub with %s", token)
    try:
        raise RuntimeError(f"401 for https://huggingface.co/api?token={token}")
    except RuntimeError:
        logger.exception("download failed")
    raise ValueError(f"Authorization: Bearer {token}")
""")


def test_logs_and_tracebacks_never_show_the_token(tmp_path):
    log = tmp_path / "job.log"
    result = subprocess.run([sys.executable, "-c", CHILD, str(log), SENTINEL], env=_env(),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    written = log.read_text()
    assert "Traceback" in written and "Traceback" in result.stderr  # the tracebacks are there
    assert "token=***" in written and "Bearer ***" in result.stderr
    assert SENTINEL not in written and SENTINEL not in result.stderr
