"""Debian's Chromium, headless, driven through the DevTools protocol: what a clinician's browser does
with dvqa's outputs (the viewer plays the video) and with its recorder page.

A small synchronous client over `websockets`: one browser per `Browser`, one page target attached in
flat mode, commands answered by id, events kept in order for `wait_event`. Chromium's own
DevToolsActivePort file gives the port it chose (--remote-debugging-port=0), so parallel tests never
collide on a port.
"""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from websockets.sync.client import connect

from helpers import tool


class BrowserError(RuntimeError):
    pass


class Browser:
    def __init__(self, *flags: str, timeout: float = 60.0) -> None:
        self.profile = Path(tempfile.mkdtemp(prefix="dvqa-chromium-"))
        self.process = subprocess.Popen(
            [tool("chromium"), "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--no-default-browser-check", "--autoplay-policy=no-user-gesture-required",
             "--remote-debugging-port=0", f"--user-data-dir={self.profile}", *flags, "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.timeout = timeout
        self._ids = itertools.count(1)
        self.events: list[dict] = []
        try:
            port, path = self._active_port()
            self.socket = connect(f"ws://127.0.0.1:{port}{path}", max_size=None, open_timeout=timeout)
            target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
            self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Page", "Runtime", "Network"):
                self.call(f"{domain}.enable", session=self.session)
        except BaseException:
            self.close()
            raise

    def _active_port(self) -> tuple[int, str]:
        marker = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BrowserError(f"chromium exited with {self.process.returncode} before it listened")
            if marker.is_file():
                lines = marker.read_text().split()
                if len(lines) >= 2:
                    return int(lines[0]), lines[1]
            time.sleep(0.05)
        raise BrowserError("chromium wrote no DevToolsActivePort in time")

    def call(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float | None = None) -> dict:
        """Send one command and wait for its answer; events arriving meanwhile are kept."""
        number = next(self._ids)
        message: dict[str, Any] = {"id": number, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        self.socket.send(json.dumps(message))
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError(f"{method}: no answer within {timeout or self.timeout:g} s")
            reply = json.loads(self.socket.recv(timeout=left))
            if reply.get("id") == number:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            if "method" in reply:
                self.events.append(reply)

    def page(self, method: str, params: dict | None = None, timeout: float | None = None) -> dict:
        return self.call(method, params, self.session, timeout)

    def evaluate(self, expression: str, timeout: float | None = None) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        result = self.page("Runtime.evaluate", {"expression": expression, "awaitPromise": True,
                                                "returnByValue": True}, timeout)
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression[:80]}: {result['exceptionDetails'].get('exception', {}).get('description')}")
        return result["result"].get("value")

    def navigate(self, url: str) -> None:
        self.page("Page.navigate", {"url": url})

    def wait_for(self, expression: str, timeout: float = 60.0, every: float = 0.25) -> Any:
        """Poll `expression` until it is truthy; its value, or BrowserError with the last value seen."""
        deadline, value = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(every)
        raise BrowserError(f"not true within {timeout:g} s: {expression[:120]} (last: {value!r})")

    def drain(self) -> None:
        """Read the events that arrived while nothing was asked (one quick command does it)."""
        self.call("Browser.getVersion")

    def requests(self) -> list[dict]:
        """Every response the page received so far: url, status, MIME type."""
        self.drain()
        return [e["params"]["response"] | {"requestId": e["params"]["requestId"]}
                for e in self.events if e.get("method") == "Network.responseReceived"]

    def close(self) -> None:
        try:
            if getattr(self, "socket", None) is not None:
                try:
                    self.call("Browser.close", timeout=5)
                except Exception:  # noqa: BLE001 - closing anyway
                    pass
                self.socket.close()
        finally:
            if self.process.poll() is None:
                self.process.kill()
            self.process.wait(10)
            shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> "Browser":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
