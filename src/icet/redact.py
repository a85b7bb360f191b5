"""The Hub token: only where a download needs it, and never in a log line or a traceback.

Only the download rules use HF_TOKEN, and they are local rules (slurm/config.yaml): they
run where `snakemake` was started. A cluster job never downloads, yet the SLURM executor
submits every job with `sbatch --export=ALL` (snakemake-executor-plugin-slurm 2.8.0,
submit_string.py; its `slurm_extra` may not carry `--export`), so the token arrives in each
job's environment. `drop_from_environment` removes it there, first thing when the job's
Snakemake parses the workflow (rules/common.smk, remote mode), so no rule's process, log or
traceback can hold it. Logs and uncaught tracebacks are redacted as well (`redact`,
`install_excepthook`), for the processes that do hold it.
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import MutableMapping

SECRET_VARS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")  # values that must never be written
REDACTED = "***"


def secret_values(environ: MutableMapping[str, str] | None = None) -> list[str]:
    """The secret values set now, longest first (so a token containing another is hidden whole)."""
    environ = os.environ if environ is None else environ
    return sorted({environ[v] for v in SECRET_VARS if environ.get(v)}, key=len, reverse=True)


def redact(text: str, secrets: list[str] | None = None) -> str:
    """`text` with every secret value replaced by ***."""
    for secret in secret_values() if secrets is None else secrets:
        text = text.replace(secret, REDACTED)
    return text


def drop_from_environment(environ: MutableMapping[str, str] | None = None) -> list[str]:
    """Remove the secret variables from `environ` (os.environ); return the names removed.

    Child processes (the rule's script, torch's workers) start from os.environ, so nothing
    this job starts can see the token afterwards.
    """
    environ = os.environ if environ is None else environ
    return [name for name in SECRET_VARS if environ.pop(name, None) is not None]


# The job's log file (setup_logging, icet.chain.Job): an uncaught error is written there too.
_JOB_LOG: list[str] = []


def error_text(kind, value, tb) -> str:
    """What an uncaught error prints: `icet: <message>` for an IcetError (bad input or state
    the user fixes: one line, as every IcetError is worded), the traceback for anything else
    (a bug, whose trace the maintainer needs)."""
    from icet.errors import IcetError

    if isinstance(value, IcetError):
        return f"icet: {value}\n"
    return "".join(traceback.format_exception(kind, value, tb))


def _redacting_excepthook(kind, value, tb) -> None:
    text = redact(error_text(kind, value, tb))
    sys.stderr.write(text)
    sys.stderr.flush()
    for log in _JOB_LOG:  # the job's log ends with the error, as docs/auditing.md says
        try:
            os.makedirs(os.path.dirname(log) or ".", exist_ok=True)
            with open(log, "a", encoding="utf-8") as f:
                f.write(text)
        except OSError:
            pass  # the log's folder is gone or full: stderr still has it


def install_excepthook(log: str | os.PathLike | None = None) -> None:
    """An uncaught exception prints one line (IcetError) or its traceback, with the secrets
    replaced by ***, to stderr and, once a job's `log` is given, at the end of that log.

    Python's default hook writes the exception's message verbatim, and an HTTP error from
    the Hub can carry the request's headers or URL. Snakemake does not send a script's
    stderr to the rule's log, so without the copy a failed job's log would not say why.
    """
    sys.excepthook = _redacting_excepthook
    if log:
        _JOB_LOG[:] = [os.fspath(log)]
