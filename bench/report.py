"""The results as one markdown table: a column per system, then ours/other ratios."""

from __future__ import annotations

from typing import Any

from bench import sut

NONE = "—"


def ratio(ours: float, other: float, resolution: float = 0.0) -> str:
    """ours / other; an `other` below the measurement's resolution only bounds the ratio."""
    if other > resolution / 2:
        return f"{ours / other:.2f}x"
    if ours <= resolution / 2:
        return "n/a (both 0)"
    # The other measured 0 (less than one tick), so the true ratio is above this.
    return f">{ours / resolution:.0f}x (other 0)"


def row(label: str, metric: str, values: dict[str, float], fmt: str, resolution: float) -> str:
    """One line: the value per system (— where it was not measured), then the ratios."""
    cells = [fmt.format(values[k]) if k in values else NONE for k in sut.KINDS]
    ours = values["daemon"]
    ratios = [ratio(ours, values[k], resolution) if k in values else NONE for k in sut.KINDS[1:]]
    return f"| {label} | {metric} | " + " | ".join(cells + ratios) + " |"


def table(
    latency: dict[str, Any],
    idle: dict[str, Any],
    control: dict[str, Any],
    reloads: dict[str, Any],
) -> str:
    others = sut.KINDS[1:]
    rows = [
        "| benchmark | metric | ours (daemon) | "
        + " | ".join(others)
        + " | "
        + " | ".join(f"ours/{k}" for k in others)
        + " |",
        "|---|---|" + "---:|" * (2 * len(sut.KINDS) - 1),
    ]
    kills = latency["kills"]
    for key, label in (("median_ms", "median (ms)"), ("p90_ms", "p90 (ms)")):
        values = {k: latency[k][key] for k in sut.KINDS}
        rows.append(row(f"restart latency, {kills} kills", label, values, "{:.2f}", 0.0))
    tick = idle["tick_s"]
    for n in (k for k in idle if k.isdigit()):
        window = idle[n]["daemon"]["window_s"]
        metrics: tuple[tuple[str, str, str, float], ...] = (
            ("cpu_s", f"CPU s in {window:.0f} s", "{:.2f}", tick),
            ("cpu_pct", "CPU %", "{:.3f}", 100 * tick / window),
            ("rss_mb", "RSS incl. helpers (MiB)", "{:.1f}", 0.0),
            ("ready_s", "time until all running (s)", "{:.2f}", 0.0),
        )
        for key, label, fmt, resolution in metrics:
            values = {k: idle[n][k][key] for k in sut.KINDS}
            rows.append(row(f"idle, N={n} sleepers", label, values, fmt, resolution))
    sizes = sorted(int(k) for k in idle if k.isdigit())
    if len(sizes) > 1:
        low, high = str(sizes[0]), str(sizes[-1])
        values = {
            k: (idle[high][k]["rss_mb"] - idle[low][k]["rss_mb"]) * 1024 / (sizes[-1] - sizes[0])
            for k in sut.KINDS
        }
        rows.append(
            row(f"idle, N={low} -> {high}", "RSS per added sleeper (KiB)", values, "{:.1f}", 0.0)
        )
    n = control["n"]
    for way, what, calls in (("api", "client", "calls"), ("cli", "CLI", "cli_calls")):
        for key, label in (("median_ms", "median"), ("p99_ms", "p99")):
            values = {k: control[k][way][key] for k in sut.MANAGERS}
            metric = f"{what} {label} (ms), {control[calls]} calls"
            rows.append(row(f"status round trip, N={n}", metric, values, "{:.2f}", 0.0))
    for n, by_kind in reloads.items():
        metrics = (
            ("apply_s", "apply command (s)", "{:.3f}", 0.0),
            ("changed_running_s", "until changed one runs (s)", "{:.3f}", 0.0),
            ("others_restarted", "other children restarted", "{:d}", 1.0),
        )
        for key, label, fmt, resolution in metrics:
            values = {k: by_kind[k][key] for k in sut.MANAGERS}
            rows.append(row(f"reload 1 of N={n}", label, values, fmt, resolution))
    return "\n".join(rows)


def flood_table(latency: dict[str, Any]) -> str:
    """The daemon's restart latency while a sibling floods its output, beside the quiet one."""
    quiet, flood = latency["daemon"], latency["daemon_flood"]
    rate = flood.get("flood_mb_per_s")
    beside = f"a sibling floods ({rate:.0f} MB/s kept)" if rate else "a sibling floods"
    rows = [
        f"| restart latency, {latency['kills']} kills | quiet | {beside} | flood/quiet |",
        "|---|---:|---:|---:|",
    ]
    for key, label in (("median_ms", "median (ms)"), ("p90_ms", "p90 (ms)")):
        rows.append(
            f"| {label} | {quiet[key]:.2f} | {flood[key]:.2f} | {ratio(flood[key], quiet[key])} |"
        )
    return "\n".join(rows)


def sandbox_table(pool: dict[str, Any]) -> str:
    """Session cycles/s, ours vs langfun; then warm acquire over HTTP."""
    cycles = pool["cycles"]
    rows = [
        f"| sandbox pool of {cycles['pool']}: cycles/s | ours (memory backend) "
        "| ours (process backend) | langfun | ours memory/langfun | ours process/langfun |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for run in cycles["runs"]:
        label = (
            f"{run['clients']} client{'s' if run['clients'] > 1 else ''}, "
            f"proactive setup {'on' if run['proactive'] else 'off'}"
        )
        ours, process, theirs = (run[k]["per_s"] for k in ("memory", "process", "langfun"))
        rows.append(
            f"| {label} | {ours:,.0f} | {process:,.0f} | {theirs:,.0f} "
            f"| {ratio(ours, theirs)} | {ratio(process, theirs)} |"
        )
    http = pool["http_acquire"]
    rows += [
        "",
        f"| warm acquire over HTTP, pool of {http['pool']} | acquire p50 (ms) | acquire p99 (ms) "
        "| release p50 (ms) | release p99 (ms) | cycles/s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for run in http.values():
        if not isinstance(run, dict):
            continue
        acquire, release = run["acquire"], run["release"]
        rows.append(
            f"| {run['clients']} clients, {run['mode']} connection, {acquire['calls']} cycles "
            f"| {acquire['median_ms']:.2f} | {acquire['p99_ms']:.2f} "
            f"| {release['median_ms']:.2f} | {release['p99_ms']:.2f} | {run['cycles_per_s']:,.0f} |"
        )
    return "\n".join(rows)


def isolation_table(pool: dict[str, Any]) -> str:
    """Exec, create and cycle costs with isolation on and off; langfun's cycle beside."""
    iso = pool["isolation"]
    execs, creates, cycles = iso["exec"], iso["create"], iso["cycle"]
    bare = execs["bare"]["median_ms"]
    rows = [
        "| one exec of `true` | median (ms) | p90 (ms) | over a bare spawn (ms) |",
        "|---|---:|---:|---:|",
    ]
    for key, label in (
        ("bare", "bare spawn (the launcher, output captured)"),
        ("none", 'process sandbox, `isolation = "none"` (prlimit, then the command)'),
        (
            "bubblewrap",
            'process sandbox, `isolation = "bubblewrap"` (its agent forks prlimit, then the command)',
        ),
        ("fresh_bwrap", "a fresh bwrap per command (not used: for comparison)"),
    ):
        run = execs[key]
        rows.append(
            f"| {label} | {run['median_ms']:.2f} | {run['p90_ms']:.2f} "
            f"| {run['median_ms'] - bare:+.2f} |"
        )
    langfun = next(
        (r["langfun"] for r in pool["cycles"]["runs"] if r["clients"] == 1 and r["proactive"]),
        None,
    )
    rows += [
        "",
        "| sandbox, 1 client, pool of 1 | median (ms) | p90 (ms) |",
        "|---|---:|---:|",
        f"| create (isolated: uid, cgroup, bwrap, agent) | {creates['bubblewrap']['median_ms']:.2f} "
        f"| {creates['bubblewrap']['p90_ms']:.2f} |",
        f'| create (`isolation = "none"`: a directory) | {creates["none"]["median_ms"]:.2f} '
        f"| {creates['none']['p90_ms']:.2f} |",
        f"| cycle: acquire, exec `true`, release (isolated, reset at release) "
        f"| {cycles['bubblewrap']['median_ms']:.2f} | {cycles['bubblewrap']['p90_ms']:.2f} |",
        f'| cycle: acquire, exec `true`, release (`isolation = "none"`) '
        f"| {cycles['none']['median_ms']:.2f} | {cycles['none']['p90_ms']:.2f} |",
    ]
    if langfun is not None:
        rows.append(
            f"| langfun's in-process cycle (`TestingSandbox.shell`, no process), mean "
            f"| {1000 / langfun['per_s']:.2f} | — |"
        )
    return "\n".join(rows)


def scrape_table(scrape: dict[str, Any]) -> str:
    """/metrics latency, and API latency idle vs during back-to-back scrapes."""
    envs = len(scrape["environments"])
    head = (
        f"{scrape['n']:,} sleepers + {scrape['sandboxes']:,} sandboxes "
        f"({envs} environment{'s' if envs != 1 else ''}; up in {scrape['ready_s']:.1f} s)"
    )
    metrics = scrape["metrics"]
    rows = [
        f"| metrics scrape, {head} | median (ms) | p99 (ms) | calls | response |",
        "|---|---:|---:|---:|---:|",
        f"| `GET /metrics`, back to back (page reused) | {metrics['median_ms']:.2f} "
        f"| {metrics['p99_ms']:.2f} | {metrics['calls']} | {metrics['bytes'] / 1024:,.0f} KiB |",
    ]
    if (fresh := scrape.get("metrics fresh")) is not None:
        rows.append(
            f"| `GET /metrics`, fresh render (1.1 s apart) | {fresh['median_ms']:.2f} "
            f"| {fresh['p99_ms']:.2f} | {fresh['calls']} | {fresh['bytes'] / 1024:,.0f} KiB |"
        )
    for target in ("/healthz", "/v1/resources"):
        for when, label in (("idle", "idle"), ("scraped", "during scrapes")):
            m = scrape[f"{when} {target}"]
            rows.append(
                f"| `GET {target}`, {label} | {m['median_ms']:.2f} | {m['p99_ms']:.2f} "
                f"| {m['calls']} | {m['bytes'] / 1024:,.0f} KiB |"
            )
    return "\n".join(rows)


def mcp_table(mcp: dict[str, Any]) -> str:
    """MCP round trips beside the HTTP API's, one call at a time."""
    ways = [
        ("mcp_stdio", "MCP, stdio (`supervisor mcp`)"),
        ("mcp_http", "MCP, streamable HTTP (`/mcp`)"),
        ("api_unix", "HTTP API, unix socket"),
        ("api_tcp", "HTTP API, TCP + token"),
    ]
    rows = [
        f"| MCP vs API, {mcp['calls']} calls each | no-op p50 (ms) | no-op p99 (ms) "
        "| acquire+exec+release p50 (ms) | p99 (ms) |",
        "|---|---:|---:|---:|---:|",
    ]
    for key, label in ways:
        noop, cycle = mcp[key]["noop"], mcp[key]["cycle"]
        rows.append(
            f"| {label} | {noop['median_ms']:.2f} | {noop['p99_ms']:.2f} "
            f"| {cycle['median_ms']:.2f} | {cycle['p99_ms']:.2f} |"
        )
    return "\n".join(rows)


def swarm_table(result: dict[str, Any]) -> str:
    """Cold creation and warm acquire, swarm vs local docker (ratio swarm/docker)."""
    rows = [
        f"| sandbox through | cold create p50 (ms) | cold create p90 (ms) "
        f"| warm acquire p50 (ms), pool of {result['pool']} | warm acquire p90 (ms) |",
        "|---|---:|---:|---:|---:|",
    ]
    docker, swarm = result["docker"], result["swarm"]
    for label, run in (("local docker", docker), ("2-node swarm", swarm)):
        cold, warm = run["cold"], run["warm"]
        rows.append(
            f"| {label} ({cold['n']} creates, {warm['n']} acquires) "
            f"| {cold['median_ms']:.0f} | {cold['p90_ms']:.0f} "
            f"| {warm['median_ms']:.2f} | {warm['p90_ms']:.2f} |"
        )
    rows.append(
        f"| swarm/docker | {ratio(swarm['cold']['median_ms'], docker['cold']['median_ms'])} "
        f"| {ratio(swarm['cold']['p90_ms'], docker['cold']['p90_ms'])} "
        f"| {ratio(swarm['warm']['median_ms'], docker['warm']['median_ms'])} "
        f"| {ratio(swarm['warm']['p90_ms'], docker['warm']['p90_ms'])} |"
    )
    return "\n".join(rows)
