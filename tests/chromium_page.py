"""Headless Chromium (the Debian package, installed with apt-get when missing) driven over the DevTools protocol
on a pipe (--remote-debugging-pipe: NUL-terminated JSON on fds 3 and 4): load a page, collect every console
message, uncaught exception, log entry and failed load, evaluate checks and take a full-page screenshot."""
from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cached_venv import skip_with_reason

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--disable-sync", "--remote-debugging-pipe")
# what the page reports about itself once loaded
_CHECKS = """JSON.stringify({
  images: document.images.length,
  broken_images: Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0).length,
  height: document.documentElement.scrollHeight,
  overflows_x: document.documentElement.scrollWidth > document.documentElement.clientWidth,
  headings: Array.from(document.querySelectorAll('h2')).map(h => h.textContent),
})"""


def chromium() -> str:
    """Path of the chromium binary, installing the Debian package first if needed (skip, printed, if impossible)."""
    found = shutil.which("chromium")
    if found:
        return found
    if os.geteuid() != 0:
        skip_with_reason("chromium is not installed and apt-get needs root")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]
    done = subprocess.run(install, capture_output=True, text=True, env=env, timeout=1800)
    if done.returncode != 0:  # stale or empty package lists
        subprocess.run(["apt-get", "update"], capture_output=True, env=env, timeout=600)
        done = subprocess.run(install, capture_output=True, text=True, env=env, timeout=1800)
    found = shutil.which("chromium")
    if not found:
        skip_with_reason(f"cannot install chromium: {(done.stderr or done.stdout).strip().splitlines()[-1:]}")
    return found


@dataclass
class PageResult:
    """What loading one page produced."""

    errors: list[str] = field(default_factory=list)  # console errors, exceptions, error log entries, failed loads
    messages: list[str] = field(default_factory=list)  # every console message and log entry, for the failure text
    checks: dict[str, Any] = field(default_factory=dict)
    screenshot: bytes = b""


class _DevTools:
    """Requests and events over Chromium's debugging pipe."""

    def __init__(self, write_fd: int, read_fd: int, process: subprocess.Popen) -> None:
        self.write_fd, self.read_fd, self.process = write_fd, read_fd, process
        self.buffer = b""
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def _receive(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self.buffer:
            left = deadline - time.time()
            assert left > 0, "no answer from chromium over the DevTools pipe"
            ready, _, _ = select.select([self.read_fd], [], [], left)
            if ready:
                chunk = os.read(self.read_fd, 1 << 20)
                assert chunk, f"chromium closed the DevTools pipe (exit code {self.process.poll()})"
                self.buffer += chunk
        message, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, params: dict[str, Any] | None = None, session: str | None = None,
             timeout: float = 60) -> dict[str, Any]:
        """Send one command and return its result (events that arrive meanwhile are kept)."""
        self.next_id += 1
        request = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            request["sessionId"] = session
        os.write(self.write_fd, json.dumps(request).encode() + b"\0")
        deadline = time.time() + timeout
        while True:
            message = self._receive(deadline)
            if message.get("id") == self.next_id:
                assert "error" not in message, f"{method}: {message['error']}"
                return message.get("result", {})
            self.events.append(message)

    def wait_for(self, method: str, timeout: float = 60) -> None:
        """Wait until an event named `method` has arrived."""
        deadline = time.time() + timeout
        while not any(event.get("method") == method for event in self.events):
            self.events.append(self._receive(deadline))

    def drain(self, seconds: float) -> None:
        """Collect the events that arrive within `seconds`."""
        deadline = time.time() + seconds
        while True:
            ready, _, _ = select.select([self.read_fd], [], [], max(0.0, deadline - time.time()))
            if not ready:
                return
            self.buffer += os.read(self.read_fd, 1 << 20)
            while b"\0" in self.buffer:
                message, self.buffer = self.buffer.split(b"\0", 1)
                self.events.append(json.loads(message))


def _text(event: dict[str, Any]) -> tuple[bool, str]:
    """(is an error, one line) for a console, exception, log or network event; ('', False) for others."""
    method, params = event.get("method"), event.get("params", {})
    if method == "Runtime.consoleAPICalled":
        words = " ".join(str(arg.get("value", arg.get("description", ""))) for arg in params.get("args", []))
        return params.get("type") in ("error", "assert"), f"console.{params.get('type')}: {words}"
    if method == "Runtime.exceptionThrown":
        details = params.get("exceptionDetails", {})
        return True, f"exception: {details.get('exception', {}).get('description', details.get('text'))}"
    if method == "Log.entryAdded":
        entry = params.get("entry", {})
        return entry.get("level") == "error", f"log.{entry.get('level')}: {entry.get('text')} {entry.get('url', '')}"
    if method == "Network.loadingFailed":
        return True, f"failed load: {params.get('errorText')} ({params.get('requestId')})"
    return False, ""


def _above_four(fd: int) -> int:
    high = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
    os.close(fd)
    return high


def render_page(page: Path, width: int = 1280, height: int = 900) -> PageResult:
    """Load `page` (a local file) in headless Chromium, wait for its load event and return what happened."""
    binary = chromium()
    command_read, command_write = os.pipe()
    answer_read, answer_write = os.pipe()
    # the child's ends get numbers above 4, so that the shell's `3<&N 4>&M` cannot overwrite one with the other
    command_read, answer_write = (_above_four(fd) for fd in (command_read, answer_write))
    profile = tempfile.mkdtemp(prefix="faceflow-chromium-")
    flags = " ".join(FLAGS)
    script = f'exec "$0" {flags} --user-data-dir="$1" about:blank 3<&{command_read} 4>&{answer_write}'
    process = subprocess.Popen(["bash", "-c", script, binary, profile], pass_fds=(command_read, answer_write),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(command_read)
    os.close(answer_write)
    tools = _DevTools(command_write, answer_read, process)
    result = PageResult()
    try:
        target = tools.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = tools.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Runtime", "Log", "Page", "Network"):
            tools.call(f"{domain}.enable", session=session)
        tools.call("Emulation.setDeviceMetricsOverride",
                   {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}, session=session)
        tools.call("Page.navigate", {"url": page.resolve().as_uri()}, session=session)
        tools.wait_for("Page.loadEventFired")
        tools.drain(0.5)
        evaluated = tools.call("Runtime.evaluate", {"expression": _CHECKS, "returnByValue": True}, session=session)
        result.checks = json.loads(evaluated["result"]["value"])
        shot = tools.call("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": width, "height": result.checks["height"], "scale": 1}}, session=session)
        result.screenshot = base64.b64decode(shot["data"])
        tools.drain(0.2)
        for event in tools.events:
            is_error, line = _text(event)
            if line:
                result.messages.append(line)
                if is_error:
                    result.errors.append(line)
        try:
            tools.call("Browser.close", timeout=10)
        except AssertionError:
            pass  # the pipe closes as the browser exits
    finally:
        os.close(command_write)
        os.close(answer_read)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(profile, ignore_errors=True)
    return result
