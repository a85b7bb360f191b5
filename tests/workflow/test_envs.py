"""The conda envs (cluster deployment) carry the same pins as pyproject.toml."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def _pins(lines):
    return dict(re.match(r"^([A-Za-z0-9_.\-]+)==(.+)$", l).groups() for l in lines if "==" in l)


def test_env_pins_match_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = {k.lower(): v for k, v in _pins(project["dependencies"]).items()}
    envs = sorted((ROOT / "envs").glob("*.yaml"))
    assert envs
    for env in envs:
        spec = yaml.safe_load(env.read_text())
        pip = next(d["pip"] for d in spec["dependencies"] if isinstance(d, dict))
        assert "-e .." in pip, f"{env.name} must install icet itself"
        for name, version in _pins(pip).items():
            assert pins.get(name.lower()) == version, f"{env.name}: {name}=={version} vs pyproject"


def test_every_rule_names_an_env_that_exists():
    for smk in (ROOT / "rules").glob("*.smk"):
        for env in re.findall(r'conda:\s*\n\s*"\.\./(envs/[^"]+)"', smk.read_text()):
            assert (ROOT / env).exists(), f"{smk.name}: {env}"
