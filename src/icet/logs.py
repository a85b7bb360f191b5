"""Logging for long stages: one log file per job (logs/<rule>/...), progress via tqdm."""

from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path

from icet.redact import install_excepthook, redact, secret_values


class _RedactSecrets(logging.Filter):
    """Replace the value of any secret environment variable with *** before it is written:
    in the message, and in the traceback of `logger.exception` (an exception's text can
    carry a request's URL or headers)."""

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = secret_values()
        if secrets:
            record.msg, record.args = redact(record.getMessage(), secrets), ()
            if record.exc_info and not record.exc_text:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            if record.exc_text:  # formatters print exc_text as it is when it is set
                record.exc_text = redact(record.exc_text, secrets)
            if record.stack_info:
                record.stack_info = redact(record.stack_info, secrets)
        return True


def setup_logging(log: str | os.PathLike | None, name: str = "icet") -> logging.Logger:
    """Log to `log` (if given) and to stderr; return the icet logger. Secrets are redacted
    from both, and from an exception nobody catches, which ends `log` too (icet.redact)."""
    install_excepthook(log)
    logger = logging.getLogger("icet")
    logger.setLevel(logging.INFO)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log:
        Path(log).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log, mode="a", encoding="utf-8"))
    for handler in handlers:
        handler.setFormatter(fmt)
        handler.addFilter(_RedactSecrets())
        logger.addHandler(handler)
    logger.propagate = False
    return logging.getLogger(f"icet.{name}") if name != "icet" else logger


def progress(iterable=None, **kwargs):
    """tqdm that writes to stderr (Snakemake sends it to the job's log) and stays quiet in CI."""
    from tqdm.auto import tqdm

    kwargs.setdefault("file", sys.stderr)
    kwargs.setdefault("mininterval", 2.0)
    kwargs.setdefault("disable", bool(os.environ.get("ICET_NO_PROGRESS")))
    return tqdm(iterable, **kwargs)


def safe_name(text: str) -> str:
    """A file-name-safe version of an id."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)
