"""Paths and images named by data files, checked before anything is built or loaded.

A data set's CSV or JSONL is input we did not write: an image path in it could be
absolute or climb out with `..` (and a builder would then copy or link a file from, or
place one, outside its folder), and an image could be truncated or a decompression bomb
that only fails when a sweep decodes it, hours in. Both are checked here, once, with one
line naming the file and the row.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path, PurePosixPath

from icet.errors import IcetError

_DRIVE = re.compile(r"^[A-Za-z]:")  # C:\images\a.png, C:a.png: absolute on Windows


def relative_path(value: str, where: str) -> str:
    """`value` as a relative POSIX path that stays inside its folder; else one IcetError.

    Backslashes count as separators (the data sets were packed on Windows as well as Linux);
    absolute paths, drive letters, `..` parts and NUL bytes are refused.
    """
    if not isinstance(value, str) or not value.strip():
        raise IcetError(f"{where}: image path must be a non-empty string, got {value!r}")
    text = value.strip().replace("\\", "/")
    if "\x00" in text:
        raise IcetError(f"{where}: image path {value!r} contains a NUL byte")
    if text.startswith("/") or _DRIVE.match(text):
        raise IcetError(f"{where}: image path {value!r} is absolute; data sets may only name "
                        "paths relative to their own folder")
    if ".." in PurePosixPath(text).parts:
        raise IcetError(f"{where}: image path {value!r} has a '..' part; data sets may only "
                        "name paths inside their own folder")
    return text


def check_image(path: str | os.PathLike, where: str) -> None:
    """Decode the whole image now: truncated files and decompression bombs stop here.

    PIL's `verify()` reads headers only, and `open()` stops at the first tile, so a JPEG cut
    short passes both; `load()` decodes every pixel. Bombs: PIL raises past twice
    `Image.MAX_IMAGE_PIXELS` (about 179 MP) and only warns between once and twice; the
    warning is an error here too, since no test-set image is that large.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(Path(path)) as img:
                img.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise IcetError(f"{where}: decompression bomb refused ({err})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise IcetError(f"{where}: unreadable image: does not decode "
                        f"({type(err).__name__}: {err})") from None
