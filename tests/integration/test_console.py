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
from contextlib import contextmanager
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


BASE_CONFIG = """
[daemon]
control_socket = "{tmp}/control.sock"
http = "127.0.0.1:0"
state_dir = "{tmp}/state"
generate_api_token = true
log_format = "json"
"""
FLAKY = """
[resources.flaky]
kind = "process"
command = ["sh", "-c", "if [ -e {marker} ]; then rm {marker}; exit 3; fi; echo started $$; exec sleep 1000"]
log_output = true
stop_timeout = "2s"
restart = {{ backoff = {{ initial = "3s", jitter = 0.0 }} }}

[groups]
apps = ["flaky"]

[environments.pool]
backend = "process"
min_ready = 1
max_size = 2
lease = "5m"
"""
DEEPHAVEN = """
[resources.analytics]
kind = "deephaven"
launch = "python"
port = "auto"
heap = "512m"
auth = "psk"
start_timeout = "150s"
"""


@contextmanager
def daemon_process(tmp_path: Path, resources: str) -> Iterator[DaemonProcess]:
    """`supervisor run` on a config of BASE_CONFIG and `resources`, until it is ready."""
    config = tmp_path / "supervisor.toml"
    config.write_text(BASE_CONFIG.format(tmp=tmp_path) + resources)
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
        assert running.ready.wait(240), "the daemon did not get ready"
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
def daemon(tmp_path: Path) -> Iterator[DaemonProcess]:
    with daemon_process(tmp_path, FLAKY.format(marker=tmp_path / "fail-once")) as running:
        yield running


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

    state = page.locator("tr[data-name=flaky] .state-cell .state")
    expect(state).to_have_text("RUNNING", timeout=WAIT)
    flaky = page.locator("tr[data-name=flaky]")
    expect(flaky.locator(".group-cell")).to_have_text("apps")
    expect(flaky.locator(".probe-cell .state")).to_have_text(re.compile(r"^[A-Z]+$"))
    expect(page.locator("svg.chart")).to_have_count(2, timeout=WAIT)
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
    expect(page.locator("[data-fact=Groups]")).to_have_text("apps")
    page.locator("#signal").select_option("CONT")
    page.get_by_role("button", name="Send").click()
    expect(page.locator(".actions .result")).to_contain_text(
        re.compile(r"SIGCONT sent to pid \d+"), timeout=WAIT
    )
    # Kept and live events: the kill's BACKOFF and the restart's STOPPING, newest first.
    events = page.locator("ol.events li")
    expect(events.first).to_contain_text("RUNNING", timeout=WAIT)
    expect(events.filter(has_text="BACKOFF")).not_to_have_count(0)
    expect(events.filter(has_text="STOPPING")).not_to_have_count(0)
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
    tmp_path: Path, browser: Browser
) -> None:
    """Twelve resources restarted in one request (three dozen events within about a
    second) are painted at most four times a second."""
    burst = '[resources.burst]\nkind = "process"\ncommand = ["sleep", "1000"]\ninstances = 12\n'
    with daemon_process(tmp_path, burst) as daemon:
        # CSP bypassed here only, so that the test may evaluate its waits in the page.
        page = browser.new_context(bypass_csp=True).new_page()
        sign_in(page, daemon, daemon.token)
        running = page.locator("tr[data-name^='burst:'] .state-cell .state", has_text="RUNNING")
        expect(running).to_have_count(12, timeout=WAIT)
        start = page.evaluate("[performance.now(), window.consoleStats.repaints]")
        events = page.evaluate("window.consoleStats.events")
        daemon.call("POST", "/v1/actions/restart", {"names": ["burst:*"]})
        # Each restart is RUNNING -> STOPPING -> STARTING -> RUNNING: three events.
        page.wait_for_function(f"window.consoleStats.events >= {events + 36}", timeout=WAIT)
        end = page.evaluate("[performance.now(), window.consoleStats.repaints]")
        expect(running).to_have_count(12, timeout=WAIT)
    seconds = (end[0] - start[0]) / 1000
    assert end[1] - start[1] <= 4 * seconds + 1, (end[1] - start[1], seconds)


@pytest.mark.timeout(300)
def test_console_applies_the_reload_plan_it_showed_and_not_one_made_stale(
    daemon: DaemonProcess, browser: Browser, tmp_path: Path
) -> None:
    """The reload page shows the plan before anything changes; a file edited again before
    Apply gets nothing applied and the new plan shown; applying that one starts both."""
    config = tmp_path / "supervisor.toml"
    original = config.read_text()
    sleeper = '\n[resources.{}]\nkind = "process"\ncommand = ["sleep", "1000"]\n'
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    sign_in(page, daemon, daemon.token)
    expect(page.locator("tr[data-name=flaky]")).to_be_visible(timeout=WAIT)

    config.write_text(original + sleeper.format("extra"))
    page.get_by_role("link", name="Reload").click()
    plan = page.get_by_role("table", name="Resources in the plan")
    expect(plan.locator("tr[data-plan=added]")).to_contain_text("extra", timeout=WAIT)
    expect(plan.locator("tr[data-plan=unchanged]")).to_contain_text("flaky")
    page.screenshot(path=tmp_path / "reload.png", full_page=True)

    config.write_text(original + sleeper.format("extra") + sleeper.format("another"))
    page.get_by_role("button", name="Apply this plan").click()
    expect(page.locator("p.result")).to_contain_text("config file changed", timeout=WAIT)
    expect(plan.locator("tr[data-plan=added]")).to_contain_text("another", timeout=WAIT)
    names = {r["name"] for r in daemon.call("GET", "/v1/resources")["resources"]}
    assert names == {"flaky"}  # the refused apply changed nothing

    page.get_by_role("button", name="Apply this plan").click()
    expect(page.locator("p.result")).to_contain_text("Applied: 2 resources changed", timeout=WAIT)
    page.get_by_role("link", name="Resources").click()
    for name in ("extra", "another"):
        expect(page.locator(f"tr[data-name={name}] .state-cell .state")).to_have_text(
            "RUNNING", timeout=WAIT
        )
    assert errors == []


@pytest.mark.timeout(400)
def test_console_shows_deephaven_credentials_only_when_asked(
    tmp_path: Path, browser: Browser
) -> None:
    """A Deephaven server is listed with its state and endpoint; its token is nowhere in
    the page until "Show credentials", and gone again after "Hide"."""
    with daemon_process(tmp_path, DEEPHAVEN) as daemon:
        page = browser.new_page()
        sign_in(page, daemon, daemon.token)
        page.get_by_role("link", name="Deephaven").click()
        row = page.locator("tr[data-server=analytics]")
        expect(row.locator(".state").first).to_have_text("RUNNING", timeout=200_000)
        creds = daemon.call("GET", "/v1/resources/analytics/credentials")
        expect(row).to_contain_text(str(creds["port"]))
        assert creds["token"] not in page.content()
        page.screenshot(path=tmp_path / "deephaven.png", full_page=True)
        row.get_by_role("button", name="Show credentials").click()
        expect(row.locator("code.secret")).to_have_text(creds["token"], timeout=WAIT)
        row.get_by_role("button", name="Hide").click()
        expect(row.locator("code.secret")).to_have_count(0, timeout=WAIT)
        assert creds["token"] not in page.content()
