"""A local HTTP server for the mirror's URL downloads (AdvBench, COCO, VQA-v2, Detoxify).

The files lie under `<root>/<host>/<path>`, so the real URL https://host/path becomes
http://127.0.0.1:<port>/host/path: same file names, same bytes, through the real
`icet.download.download_url` code. Bound to 127.0.0.1 only, started and stopped by the
rehearsal (a context manager), on a port fixed by the work folder (`stable_port`).
"""

from __future__ import annotations

import functools
import hashlib
import threading
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

from icet.errors import IcetError


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass


def stable_port(key: str) -> int:
    """A port in 20000..39999 fixed by `key` (the work folder): the URLs, which are rule
    params, then stay the same from one rehearsal to the next, so nothing reruns for them."""
    return 20000 + int(hashlib.sha256(key.encode()).hexdigest(), 16) % 20000


@contextmanager
def serve(root: str | Path, port: int = 0):
    """Serve `root` on 127.0.0.1:`port` (0: a free one); yields the base URL, stops on exit."""
    handler = functools.partial(_QuietHandler, directory=str(root))
    try:
        server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    except OSError as err:
        raise IcetError(f"mirror server: cannot listen on 127.0.0.1:{port} ({err.strerror}); "
                        f"another rehearsal in the same folder may be running") from None
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
