"""The web console end to end: a real daemon process, Debian's chromium driven by
Playwright (its sync API, in plain sync tests: its own event loop never meets trio's).

Screenshots of the main pages are written to the test's tmp_path (artefacts, never
committed).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
WAIT = 30_000  # ms: generous, for a loaded machine


@dataclass
class DaemonProcess:
    """`supervisor run` in a child process; its JSON log lines as they come."""

    proc: subprocess.Popen[str]
    url: str = ""
    token: str = ""
    lines: list[dict[str, Any]] = field(default_factory=list)
    ready: threading.Event = field(default_factory=threading.Event)

    def drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            self.lines.append(entry)
            if entry.get("event") == "api_listening":
                self.url = entry["console"]
                self.token = Path(entry["token_file"]).read_text().strip()
            if entry.get("event") == "daemon_ready":
                self.ready.set()
        self.ready.set()  # it exited: do not wait on

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """The API with the bearer token (as a script would, beside the browser)."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(  # noqa: S310 (our own loopback URL)
            self.url.rstrip("/") + path,
            data=data,
            method=method,
            headers={"authorization": f"Bearer {self.token}", "content-type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310
            raw = answer.read()
        return json.loads(raw) if raw else None


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[DaemonProcess]:
    marker = tmp_path / "fail-once"
    config = tmp_path / "supervisor.toml"
    config.write_text(f"""
[daemon]
control_socket = "{tmp_path}/control.sock"
http = "127.0.0.1:0"
state_dir = "{tmp_path}/state"
generate_api_token = true
log_format = "json"

[resources.flaky]
kind = "process"
command = ["sh", "-c", "if [ -e {marker} ]; then rm {marker}; exit 3; fi; echo started $$; exec sleep 1000"]
log_output = true
stop_timeout = "2s"
restart = {{ backoff = {{ initial = "3s", jitter = 0.0 }} }}

[environments.pool]
backend = "process"
min_ready = 1
max_size = 2
lease = "5m"
""")
    proc = subprocess.Popen(
        [sys.executable, "-m", "supervisor", "run", "-c", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    running = DaemonProcess(proc)
    reader = threading.Thread(target=running.drain, daemon=True)
    reader.start()
    try:
        assert running.ready.wait(60), "the daemon did not get ready"
        assert proc.poll() is None, running.lines[-5:]
        yield running
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(60) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            reader.join(10)
            assert proc.stdout is not None
            proc.stdout.close()


@pytest.fixture
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


def sign_in(page: Page, daemon: DaemonProcess, token: str) -> None:
    page.goto(daemon.url)
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Sign in").click()


def log_count(page: Page, text: str) -> int:
    return int(page.locator("pre.log").inner_text().count(text))


@pytest.mark.timeout(300)
def test_console_signs_in_follows_a_crash_live_restarts_and_releases(
    daemon: DaemonProcess, browser: Browser, tmp_path: Path
) -> None:
    """Signed in, the table follows RUNNING -> BACKOFF -> RUNNING after a kill with no
    reload, a restart from the page shows its result and a new log line, and a session
    released from the environments page is gone."""
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    sign_in(page, daemon, daemon.token)

    state = page.locator("tr[data-name=flaky] .state")
    expect(state).to_have_text("RUNNING", timeout=WAIT)
    page.screenshot(path=tmp_path / "resources.png", full_page=True)
    pid = int(page.locator("tr[data-name=flaky] td.num").first.inner_text())
    loads = page.evaluate("performance.getEntriesByType('navigation').length")

    (tmp_path / "fail-once").touch()  # the restart after the kill fails: a real backoff
    os.kill(pid, signal.SIGKILL)
    expect(state).to_have_text("BACKOFF", timeout=WAIT)
    expect(state).to_have_text("RUNNING", timeout=WAIT)
    assert page.evaluate("performance.getEntriesByType('navigation').length") == loads
    assert page.evaluate("window.consoleStats.events") >= 4  # pushed, not polled

    page.get_by_role("link", name="flaky").click()
    expect(page.locator("pre.log")).to_contain_text("started", timeout=WAIT)
    before = log_count(page, "started")
    page.get_by_role("button", name="Restart").click()
    expect(page.locator(".actions .result")).to_contain_text("restart: accepted", timeout=WAIT)
    # (a regex, not wait_for_function: the page's CSP forbids evaluating strings)
    more = re.compile(rf"(started \d+\s[\s\S]*){{{before + 1}}}")
    expect(page.locator("pre.log")).to_have_text(more, timeout=WAIT)
    expect(page.locator("[data-fact=State] .state")).to_have_text("RUNNING", timeout=WAIT)
    page.screenshot(path=tmp_path / "resource.png", full_page=True)

    acquired = daemon.call("POST", "/v1/environments/pool/sessions", {})
    page.get_by_role("link", name="Environments").click()
    row = page.locator(f"tr[data-session='{acquired['session_id']}']")
    expect(row).to_be_visible(timeout=WAIT)
    expect(page.locator("[data-env=pool] .counts")).to_contain_text("1 busy", timeout=WAIT)
    page.screenshot(path=tmp_path / "environments.png", full_page=True)
    row.get_by_role("button", name="Release").click()
    expect(row).to_have_count(0, timeout=WAIT)
    expect(page.locator("[data-env=pool] .result")).to_contain_text("released", timeout=WAIT)

    page.get_by_role("button", name="Restart environment").click()
    expect(page.locator("[data-env=pool] .result")).to_contain_text(
        re.compile("restart: accepted"), timeout=WAIT
    )
    assert errors == []


@pytest.mark.timeout(300)
def test_console_refuses_a_bad_token_and_shows_nothing(
    daemon: DaemonProcess, browser: Browser, tmp_path: Path
) -> None:
    """A wrong token is refused on the page, no cookie is set and /v1 stays closed."""
    context = browser.new_context()
    page = context.new_page()
    sign_in(page, daemon, "not-the-token")
    expect(page.locator("#sign-in-error")).to_contain_text("refused", timeout=WAIT)
    page.screenshot(path=tmp_path / "sign-in-refused.png", full_page=True)
    assert context.cookies() == []
    assert page.locator("#nav").is_hidden()
    status = page.evaluate("fetch('/v1/resources').then((r) => r.status)")
    assert status == 401


@pytest.mark.timeout(300)
def test_console_sign_out_closes_the_api_to_the_browser(
    daemon: DaemonProcess, browser: Browser
) -> None:
    """After sign-out the page is back to the sign-in form and /v1 answers 401."""
    page = browser.new_page()
    sign_in(page, daemon, daemon.token)
    expect(page.locator("tr[data-name=flaky]")).to_be_visible(timeout=WAIT)
    page.get_by_role("button", name="Sign out").click()
    expect(page.locator("#sign-in")).to_be_visible(timeout=WAIT)
    assert page.evaluate("fetch('/v1/resources').then((r) => r.status)") == 401


def test_a_generated_token_file_is_private_and_kept(daemon: DaemonProcess) -> None:
    """generate_api_token: STATE_DIR/api-token, mode 0600, the token the API accepts."""
    path = Path(next(e["token_file"] for e in daemon.lines if e.get("event") == "api_listening"))
    assert path.name == "api-token"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert daemon.call("GET", "/v1/resources")["resources"][0]["name"] == "flaky"


@pytest.mark.timeout(300)
def test_a_burst_of_events_repaints_at_most_four_times_a_second(
    daemon: DaemonProcess, browser: Browser
) -> None:
    """Ten restarts in a row (dozens of events in about half a second) are painted at most
    four times a second."""
    # CSP bypassed here only, so that the test may evaluate its waits in the page.
    page = browser.new_context(bypass_csp=True).new_page()
    sign_in(page, daemon, daemon.token)
    expect(page.locator("tr[data-name=flaky] .state")).to_have_text("RUNNING", timeout=WAIT)
    start = page.evaluate("[performance.now(), window.consoleStats.repaints]")
    events = page.evaluate("window.consoleStats.events")
    for _ in range(10):
        daemon.call("POST", "/v1/resources/flaky/restart", {})
    page.wait_for_function(f"window.consoleStats.events >= {events + 12}", timeout=WAIT)
    expect(page.locator("tr[data-name=flaky] .state")).to_have_text("RUNNING", timeout=WAIT)
    end = page.evaluate("[performance.now(), window.consoleStats.repaints]")
    seconds = (end[0] - start[0]) / 1000
    assert end[1] - start[1] <= 4 * seconds + 1, (end[1] - start[1], seconds)
    assert page.evaluate("window.consoleStats.events") - events >= 12
