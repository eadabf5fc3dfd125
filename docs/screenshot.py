"""Make docs/console.png, the README's picture of the console (run by hand, once).

    .venv/bin/python docs/screenshot.py

A daemon on a throw-away config (a few groups of sleepers, one crash-looping program, a
sandbox pool), a few restarts so the charts have something to draw, then headless
Debian chromium signs in and photographs the resources page. Tests never write here.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

OUT = Path(__file__).with_name("console.png")
CONFIG = """
[daemon]
control_socket = "{tmp}/control.sock"
http = "127.0.0.1:0"
state_dir = "{tmp}/state"
generate_api_token = true
log_format = "json"

[resources.web]
kind = "process"
command = ["python3", "-m", "http.server", "0", "--bind", "127.0.0.1"]
instances = 3
health = {{ exec = ["true"], interval = "5s" }}

[resources.worker]
kind = "process"
command = ["sleep", "100000"]
instances = 4

[resources.scheduler]
kind = "process"
command = ["sleep", "100000"]

[resources.importer]
kind = "process"
command = ["sh", "-c", "sleep 2; echo 'cannot reach the feed' >&2; exit 3"]
restart = {{ backoff = {{ initial = "20s" }} }}

[groups]
frontend = ["web"]
batch = ["worker", "scheduler", "importer"]

[environments.agents]
backend = "process"
isolation = "none"
min_ready = 4
max_size = 8
"""


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "supervisor.toml"
        config.write_text(CONFIG.format(tmp=tmp))
        log = Path(tmp) / "daemon.log"
        with log.open("wb") as sink:
            daemon = subprocess.Popen(
                [sys.executable, "-m", "supervisor", "run", "-c", str(config)],
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        try:
            url, token = "", ""
            while not url:  # a script, not a test: polling is fine
                time.sleep(0.2)
                for line in log.read_text().splitlines():
                    if '"api_listening"' in line:
                        entry = json.loads(line)
                        url = entry["console"]
                        token = Path(entry["token_file"]).read_text().strip()
            for _ in range(3):
                call(url, token, "v1/actions/restart", {"names": ["worker:*"]})
                time.sleep(1.5)
            with sync_playwright() as playwright:
                chromium = shutil.which("chromium") or "/usr/bin/chromium"
                browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
                page = browser.new_page(viewport={"width": 1240, "height": 780})
                page.goto(url)
                page.get_by_label("API token").fill(token)
                page.get_by_role("button", name="Sign in").click()
                expect(page.locator("svg.chart")).to_have_count(2, timeout=30_000)
                expect(page.locator("tr[data-name=importer] .state-cell")).to_have_text(
                    "BACKOFF", timeout=30_000
                )
                page.screenshot(path=OUT)
                browser.close()
        finally:
            daemon.terminate()
            daemon.wait(60)
    print(f"{OUT}: {OUT.stat().st_size // 1024} KiB")


def call(url: str, token: str, path: str, body: dict[str, object]) -> None:
    request = urllib.request.Request(  # noqa: S310 (our own loopback URL)
        url + path,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"authorization": f"Bearer {token}", "content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310
        answer.read()


if __name__ == "__main__":
    main()
