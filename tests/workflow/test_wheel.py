"""icet as an installed package: a wheel of this checkout, installed (not editable) into a
fresh virtual environment, reads what it ships (its config schemas) and runs outside the
checkout: `icet check-config` on the repository's configs, and the toy's first rule (its data
build) through the workflow.

Offline, as CI's tests are: the wheel is built with the project environment's setuptools
(no build isolation), the fresh environment has no pip of its own (the project's pip installs
into it) and takes icet's dependencies from the project environment through a .pth file
written after icet is installed, so the only icet it can import is the wheel's.
"""

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.dag, pytest.mark.xdist_group("wheel")]


def run(*command, cwd, timeout=600):
    """Run a command; no PYTHONPATH, which could put a checkout's icet before the wheel's."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([str(c) for c in command], cwd=cwd, capture_output=True, text=True,
                            env={**env, "HF_HUB_OFFLINE": "1", "ICET_NO_PROGRESS": "1"},
                            timeout=timeout)
    assert result.returncode == 0, f"{command}: {result.stdout[-2000:]}{result.stderr[-4000:]}"
    return result


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """A fresh venv with the wheel installed; its bin/ folder."""
    work = tmp_path_factory.mktemp("wheel")
    # a copy of what the wheel is built from, so the build leaves nothing in the checkout
    source = work / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "src" / "icet", source / "src" / "icet",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
        "--wheel-dir", work / "dist", source, cwd=work)
    wheel = next((work / "dist").glob("icet-*.whl"))
    fresh = work / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", fresh, cwd=work)
    python = fresh / "bin" / "python"
    run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index",
        wheel, cwd=work)
    # icet's dependencies: the project environment's packages, after the wheel's icet
    site = run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])",
               cwd=work).stdout.strip()
    Path(site, "project-packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return fresh / "bin"


def test_the_wheel_ships_its_schemas_and_is_the_icet_imported(venv, tmp_path):
    found = run(venv / "python", "-c", "import icet, icet.schemas as s; print(icet.__file__); "
                "print(s.path('toy'))", cwd=tmp_path).stdout.split()
    assert all(Path(p).is_relative_to(venv.parent) for p in found), found
    assert Path(found[1]).is_file()


def test_check_config_reads_the_installed_schemas(venv, tmp_path):
    for files in (["config.yaml"], ["config.yaml", "toy/toy.yaml"],
                  ["config.yaml", "rehearsal/rehearsal.yaml"]):
        out = run(venv / "icet", "check-config", *[ROOT / f for f in files], cwd=tmp_path)
        assert out.stdout.startswith("ok: run"), files


def test_the_toys_data_build_runs_on_the_installed_package(venv, tmp_path):
    """The toy's first rule: its job imports the wheel's icet, which reads the toy schema
    from the package (it once looked for <site-packages>/../schema/toy.schema.yaml)."""
    run(venv / "python", "-m", "snakemake", "--profile", "toy", "--snakefile", ROOT / "Snakefile",
        "--directory", tmp_path, "--configfile", ROOT / "toy" / "toy.yaml",
        ROOT / "tests" / "data" / "toy-ci.yaml", "--cores", "1",
        "resources/toy/data/build.json", cwd=ROOT)
    assert (tmp_path / "resources" / "toy" / "data" / "cp.jsonl").stat().st_size > 0
