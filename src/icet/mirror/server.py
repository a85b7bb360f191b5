"""A local HTTP server for the mirror's URL downloads (AdvBench, COCO, VQA-v2, Detoxify).

The files lie under `<root>/<host>/<path>`, so the real URL https://host/path becomes
http://127.0.0.1:<port>/host/path: same file names, same bytes, through the real
`icet.download.download_url` code. Bound to 127.0.0.1 only, started and stopped by the
rehearsal (a context manager), on a free port the OS picks.
"""

from __future__ import annotations

import functools
import threading
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass


@contextmanager
def serve(root: str | Path):
    """Serve `root` on 127.0.0.1:<free port>; yields the base URL, stops on exit."""
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def local_url(url: str, base: str) -> str:
    """The mirror URL of a real one: https://host/path -> <base>/host/path."""
    parts = urlsplit(url)
    return f"{base}/{parts.netloc}{parts.path}"


def mirror_path(url: str, root: str | Path) -> Path:
    """Where the mirror keeps the file of a real URL."""
    parts = urlsplit(url)
    return Path(root) / parts.netloc / parts.path.lstrip("/")
