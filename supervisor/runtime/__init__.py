"""The composition root and what only it knows: how a config becomes running objects.

    daemon      builds the pieces below and runs them: start-up order, shutdown
    kinds       every resource kind, sandbox backend and feature kind, one table each
    build       a config becomes supervisors and environments (through kinds)
    resources   the one owner of the supervisors: serve, apply a plan, operator verbs
    apply       what a reload changes, in order (engines, secrets, resources, pools)
    reload      when reloads happen, serialized and coalesced, and how they are reported
    control     the API's view of the daemon, and the reused /metrics page
    lifecycle   starting, ready, stopping
    signals     SIGTERM/SIGINT, SIGHUP, SIGUSR1
    systemd     sd_notify, the watchdog, the status line
    state_dir   the lock, the instance id, records of launched processes, orphan reaping

Nothing outside this package (but the CLI) imports it.
"""
