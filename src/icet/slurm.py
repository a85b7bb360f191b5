"""SLURM partition and account for the `slurm` profile, read from the environment.

slurm/config.yaml evaluates these for every job (default-resources), so a site sets
ICET_SLURM_PARTITION / ICET_SLURM_ACCOUNT instead of editing the profile. Unset is fine
where the cluster does not need them (a default partition; no enforced accounts); where it
does, the run stops before any sbatch with one line saying which variable to export.
"""

from __future__ import annotations

import os
import subprocess
from functools import lru_cache

from icet.errors import IcetError

PARTITION_VAR = "ICET_SLURM_PARTITION"
ACCOUNT_VAR = "ICET_SLURM_ACCOUNT"


def _query(*command: str) -> str | None:
    """A SLURM client's stdout, or None where there is no cluster (a dry run elsewhere)."""
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=30)
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


@lru_cache(maxsize=None)
def partition() -> str:
    """$ICET_SLURM_PARTITION; else the cluster's default partition; else an error."""
    if value := os.environ.get(PARTITION_VAR, "").strip():
        return value
    listing = _query("sinfo", "-h", "-o", "%P")
    if listing is None:  # no SLURM client here: nothing to submit to, nothing needed
        return ""
    default = [p.rstrip("*") for p in listing.split() if p.endswith("*")]
    if not default:
        raise IcetError(f"{PARTITION_VAR} is not set and this cluster has no default "
                        f"partition (sinfo): export {PARTITION_VAR}=<partition> "
                        "(slurm/config.yaml)")
    return default[0]


@lru_cache(maxsize=None)
def account() -> str:
    """$ICET_SLURM_ACCOUNT; else none, or an error where the cluster enforces accounts."""
    if value := os.environ.get(ACCOUNT_VAR, "").strip():
        return value
    config = _query("scontrol", "show", "config") or ""
    for line in config.splitlines():
        key, _, setting = line.partition("=")
        if key.strip() == "AccountingStorageEnforce" and "associations" in setting:
            raise IcetError(f"{ACCOUNT_VAR} is not set and this cluster enforces accounts "
                            f"(AccountingStorageEnforce ={setting.strip()}): export "
                            f"{ACCOUNT_VAR}=<account> (slurm/config.yaml)")
    return ""
