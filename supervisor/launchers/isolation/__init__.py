"""Isolated sandboxes: a bubblewrap'd set of namespaces per sandbox, entered per command.

`bubblewrap` finds bwrap and writes one sandbox's command line; `roots` says where the
sandboxes' directories live and sweeps a dead daemon's; `uids` leases each sandbox a host
uid of its own; `cgroups` caps a sandbox's memory and processes (cgroup v1 or v2);
`agent` is the program that runs as PID 1 inside and starts the commands; `namespace` is
the daemon's side of one sandbox, and `commands` of one command in it. The `process`
sandbox backend uses them.

Why a long-lived namespace, entered through an agent: a fresh `bwrap` per command costs
6-9 ms (most of it namespace and mount setup) over a bare spawn; a command forked by an
agent already inside costs what an unisolated exec does (bench/RESULTS.md), inherits the
cgroup (which `nsenter` cannot join without a race) and lets background processes live
for the session.
"""
