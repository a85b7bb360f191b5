"""`snakemake --report` on the finished reduced toy run, rendered in headless Chromium.

Reuses tests/workflow/test_dag.py's run (session fixture `toy_run`, same xdist group): no second DAG.
Chromium is driven over the DevTools protocol with a few lines of stdlib websocket, so the
test sees console errors and uncaught exceptions by level, opens the "Figures" and
"Tables" pages as a reader would, and saves screenshots under the run's folder.
Chromium is the Debian package `chromium` (system-packages.txt); with CI=true a missing
browser fails the test, elsewhere it skips.
"""

import base64
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from test_dag import RUN, run_snakemake, toy_run  # noqa: F401  (the shared DAG fixture)

pytestmark = [pytest.mark.dag, pytest.mark.xdist_group("dag")]

NEW_OUTPUTS = ["tables/agreement", "tables/table1", "tables/table4", "tables/table5"]
FIGURES = ["figure1", "figure3", "layers-toy-llava", "lppo-toy-llava"]


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium not installed (Debian package `chromium`, system-packages.txt)")
        pytest.skip("chromium not installed")
    return path


class DevTools:
    """The smallest DevTools-protocol client: one page, text frames, events kept in order."""

    def __init__(self, ws_url: str):
        host, port, path = re.match(r"ws://([^:/]+):(\d+)(/.*)", ws_url).groups()
        self.sock = socket.create_connection((host, int(port)), timeout=30)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                           f"Sec-WebSocket-Version: 13\r\n\r\n").encode())
        reply = b""
        while b"\r\n\r\n" not in reply:
            reply += self.sock.recv(4096)
        assert b" 101 " in reply.split(b"\r\n")[0], reply
        self.buffer = reply.split(b"\r\n\r\n", 1)[1]
        self.events, self.next_id = [], 0

    def _read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError("devtools socket closed")
            self.buffer += chunk
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out

    def _frame(self) -> dict:
        message = b""
        while True:
            first, second = self._read(2)
            size = second & 0x7F
            if size == 126:
                size = struct.unpack(">H", self._read(2))[0]
            elif size == 127:
                size = struct.unpack(">Q", self._read(8))[0]
            message += self._read(size)
            if first & 0x80:  # FIN
                return json.loads(message)

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        data = json.dumps({"id": self.next_id, "method": method, "params": params}).encode()
        mask = os.urandom(4)
        header = bytes([0x81])
        header += (bytes([0x80 | len(data)]) if len(data) < 126
                   else bytes([0x80 | 126]) + struct.pack(">H", len(data)) if len(data) < 65536
                   else bytes([0x80 | 127]) + struct.pack(">Q", len(data)))
        self.sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))
        while True:
            message = self._frame()
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True,
                           awaitPromise=True)
        return result["result"].get("value")

    def screenshot(self, path: Path) -> None:
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot")["data"]))


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    exe = chromium()
    profile = tmp_path_factory.mktemp("chromium-profile")
    proc = subprocess.Popen(
        [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--no-first-run", "--remote-debugging-port=0", f"--user-data-dir={profile}",
         "--window-size=1400,1000", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.time() + 60
        while not port_file.exists() and time.time() < deadline:
            time.sleep(0.2)
        assert port_file.exists(), "chromium did not open its DevTools port"
        port = port_file.read_text().split()[0]
        pages = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list"))
        page = next(p for p in pages if p["type"] == "page")
        yield DevTools(page["webSocketDebuggerUrl"])
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def wait_for(tools: DevTools, expression: str, timeout: float = 30.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = tools.evaluate(expression)
        if value:
            return value
        time.sleep(0.3)
    return tools.evaluate(expression)


def click_text(tools: DevTools, text: str) -> bool:
    """Click the innermost visible element whose text ends with `text` (menu entry, file)."""
    return tools.evaluate(
        "(() => { const all = [...document.querySelectorAll('a, li, span, div, button, td')];"
        f" const hit = all.filter(e => e.textContent.trim().endsWith({json.dumps(text)})"
        " && e.offsetParent !== null).pop(); if (!hit) return false; hit.click(); return true;"
        " })()")


def view_file(tools: DevTools, name: str) -> bool:
    """Press the "eye" (view) button of the result row whose file name ends with `name`."""
    return tools.evaluate(
        "(() => { const row = [...document.querySelectorAll('tr')].find(r => r.cells.length"
        f" && r.cells[0].textContent.trim().endsWith({json.dumps(name)}));"
        " const eye = row && row.querySelector('a[iconname=eye]');"
        " if (!eye) return false; eye.click(); return true; })()")


def errors_in(events: list[dict]) -> list[str]:
    bad = []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.exceptionThrown":
            bad.append(json.dumps(params["exceptionDetails"])[:300])
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            bad.append(" ".join(str(a.get("value", a.get("description"))) for a in params["args"]))
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            bad.append(params["entry"]["text"])
    return bad


def test_new_tables_and_figures_written(toy_run):
    workdir, _ = toy_run
    for stem in NEW_OUTPUTS + ["tables/table2", "tables/layers", "tables/utility"]:
        for ext in ("csv", "md", "tex"):
            path = workdir / RUN / f"{stem}.{ext}"
            assert path.exists() and path.stat().st_size > 0, path
    for name in FIGURES:
        assert (workdir / RUN / f"figures/{name}.png").read_bytes()[:4] == b"\x89PNG"
        assert (workdir / RUN / f"figures/{name}.pdf").read_bytes()[:5] == b"%PDF-"
    table4 = (workdir / RUN / "tables/table4.md").read_text()
    assert "masked" in table4 and "(toy)" in table4 and "toy guard" in table4


def test_html_report_renders_figures_without_console_errors(toy_run, browser):
    workdir, _ = toy_run
    report = workdir / RUN / "report.html"
    result = run_snakemake(workdir, "--report", str(report), timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    html = report.read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)=["']https?://""", html), "report loads remote files"
    for name in FIGURES:
        assert f"{name}.png" in html, name

    browser.call("Runtime.enable")
    browser.call("Log.enable")
    browser.call("Page.enable")
    browser.call("Page.navigate", url=report.as_uri())
    assert wait_for(browser, "document.readyState === 'complete' && "
                             "document.body.innerText.includes('ICET layer-wise safety')")
    browser.screenshot(workdir / RUN / "report-home.png")

    assert click_text(browser, "Figures"), "no Figures entry in the report menu"
    listed = wait_for(browser, "document.body.innerText.includes('figure1.png') && "
                               "document.body.innerText")
    assert listed, "Figures page lists no figure1.png"
    for name in FIGURES:
        assert f"{name}.png" in listed, name
    browser.screenshot(workdir / RUN / "report-figures.png")

    for name in FIGURES:  # each figure opens as a real raster image, as wide as the PNG
        assert view_file(browser, f"{name}.png"), f"{name}.png has no view button"
        width = wait_for(browser, "Math.max(0, ...[...document.images].filter(i => i.complete"
                                  " && i.src.startsWith('data:image/png')).map(i => i.naturalWidth))")
        assert width and width > 300, f"{name}.png is not displayed"
        browser.screenshot(workdir / RUN / f"report-{name}.png")
        browser.evaluate("history.back()")
        wait_for(browser, f"document.body.innerText.includes({json.dumps(name + '.png')})")

    errors = errors_in(browser.events)
    assert not errors, errors
