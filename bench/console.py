"""The web console at scale, in headless Chromium (Debian's, through Playwright).

The daemon runs `n` sleepers and `sandboxes` warm process sandboxes (the scrape
benchmark's config, plus a generated API token). A browser signed in through
`POST /console/session` then loads the console cold and we measure:

- first render: navigation start until the resources table holds all `n` rows;
- the initial payload: the bodies the page fetched to get there, as sent (gzipped) and
  as decoded, from the browser's resource timing;
- the environments page: until every environment's section is drawn;
- repaints under a burst: `POST /v1/actions/restart` of every resource (3 events each),
  and the page's repaints per second from the burst's start to its last event (the
  target is at most 4: the page coalesces), with the mean time one repaint takes.
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.request
from pathlib import Path
from typing import Any

from playwright.sync_api import Page, sync_playwright

from bench import apiload, scrape

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
QUIET = 2.0  # seconds without an event: the burst is over
# Bench-only instrumentation: the time of every repaint (consoleStats counts them).
RECORD_JS = """() => {
  const stats = window.consoleStats;
  let count = stats.repaints;
  window.repaintTimes = [];
  Object.defineProperty(stats, "repaints", {
    get: () => count,
    set: (value) => { count = value; window.repaintTimes.push(performance.now()); },
  });
}"""
PAYLOAD_JS = """() => {
  const nav = performance.getEntriesByType("navigation")[0];
  const entries = [nav, ...performance.getEntriesByType("resource")]
    .filter((e) => !e.name.includes("/v1/events"));
  return entries.map((e) => [e.name, e.encodedBodySize, e.decodedBodySize]);
}"""


def _listening(log: Path) -> tuple[str, str]:
    """The console's URL and the generated token, from the daemon's `api_listening` line."""
    for line in log.read_text(errors="replace").splitlines():
        if '"api_listening"' in line:
            entry = json.loads(line)
            return entry["console"], Path(entry["token_file"]).read_text().strip()
    raise RuntimeError("the daemon logged no api_listening line")


def _restart_all(url: str, token: str) -> None:
    request = urllib.request.Request(  # noqa: S310 (our own loopback URL)
        url + "v1/actions/restart",
        data=json.dumps({"names": ["all"]}).encode(),
        method="POST",
        headers={"authorization": f"Bearer {token}", "content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=120) as answer:  # noqa: S310
        answer.read()


def _stats(page: Page) -> dict[str, float]:
    stats: dict[str, float] = page.evaluate("({...window.consoleStats, now: performance.now()})")
    return stats


def _burst(page: Page, url: str, token: str, n: int) -> dict[str, Any]:
    page.evaluate(RECORD_JS)
    before = _stats(page)
    _restart_all(url, token)
    deadline = time.monotonic() + 300
    last = _stats(page)
    while time.monotonic() < deadline:  # polling is fine in a benchmark
        time.sleep(QUIET)
        now = _stats(page)
        if now["events"] == last["events"] and now["events"] - before["events"] >= 3 * n:
            break
        last = now
    after = _stats(page)
    end = after["lastEvent"] + 250  # the last event's repaint may wait this long
    times: list[float] = page.evaluate("window.repaintTimes")
    repaints = sum(1 for t in times if t <= end)
    seconds = (end - before["now"]) / 1000
    busiest = max(sum(1 for u in times if t <= u < t + 1000) for t in times) if times else 0
    return {
        "events": int(after["events"] - before["events"]),
        "seconds": seconds,
        "repaints": int(repaints),
        "repaints_per_s": repaints / seconds,
        "busiest_second": busiest,
        "paint_ms_mean": (after["paintMs"] - before["paintMs"]) / max(1, len(times)),
    }


def _measure(url: str, token: str, n: int, environments: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            # CSP bypassed so that the bench may evaluate its waits in the page.
            context = browser.new_context(bypass_csp=True, viewport={"width": 1400, "height": 900})
            signed = context.request.post(url + "console/session", data={"token": token})
            assert signed.ok, signed.text()
            page = context.new_page()
            page.goto(url, wait_until="commit")
            page.wait_for_function(
                f"document.querySelectorAll('tr[data-name]').length >= {n}",
                polling="raf",
                timeout=120_000,
            )
            results["first_render_ms"] = page.evaluate("performance.now()")
            entries = page.evaluate(PAYLOAD_JS)
            results["payload_gzip_bytes"] = sum(e[1] for e in entries)
            results["payload_bytes"] = sum(e[2] for e in entries)
            results["payload_files"] = len(entries)
            results["largest"] = max(entries, key=lambda e: e[1])[0].replace(url, "/")
            results["burst"] = _burst(page, url, token, n)

            page.goto("about:blank")
            page.goto(url + "#/environments", wait_until="commit")
            page.wait_for_function(
                f"document.querySelectorAll('section.env').length >= {environments}",
                polling="raf",
                timeout=120_000,
            )
            results["environments_render_ms"] = page.evaluate("performance.now()")
        finally:
            browser.close()
    return results


def run(workdir: Path, *, n: int, sandboxes: int, per_env: int) -> dict[str, Any]:
    """Bring the daemon up with `n` sleepers and `sandboxes` sandboxes, then measure."""
    text, sizes = scrape.config(workdir, n, sandboxes, per_env)
    text = text.replace("[daemon]\n", "[daemon]\ngenerate_api_token = true\n", 1)
    results: dict[str, Any] = {"n": n, "sandboxes": sandboxes, "environments": sizes}
    with apiload.running(text, workdir) as daemon:
        results["ready_s"] = daemon.wait_ready(n, timeout=600)
        url, token = _listening(daemon.log)
        results.update(_measure(url, token, n, len(sizes)))
    return results


def table(console: dict[str, Any]) -> str:
    """One row per measure, beside its target."""
    burst = console["burst"]
    head = f"{console['n']:,} resources + {console['sandboxes']:,} sandboxes"
    return "\n".join(
        [
            f"| web console, {head} (headless Chromium) | measured | target |",
            "|---|---:|---:|",
            f"| first render (navigation to {console['n']:,} rows) "
            f"| {console['first_render_ms']:,.0f} ms | 2,000 ms |",
            f"| initial payload, gzipped ({console['payload_files']} files; decoded "
            f"{console['payload_bytes'] / 1024:,.0f} KiB) "
            f"| {console['payload_gzip_bytes'] / 1024:,.0f} KiB | 1,024 KiB |",
            f"| repaints during a burst ({burst['events']:,} events in "
            f"{burst['seconds']:.1f} s; {burst['paint_ms_mean']:.0f} ms each; busiest second "
            f"{burst['busiest_second']}) | {burst['repaints_per_s']:.1f}/s | 4/s |",
            f"| environments page drawn | {console['environments_render_ms']:,.0f} ms | - |",
        ]
    )
