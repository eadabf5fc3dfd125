"""The guardian: a tiny process that kills the daemon's children if the daemon dies.

It runs `SCRIPT` under /bin/sh, its stdin the read end of a pipe whose only writer is the
daemon. The daemon writes `+PID` after it spawns a child and `-PID` after it reaps one.
When the pipe reaches end-of-file, the daemon is gone (exited or killed, even with
SIGKILL): the guardian SIGKILLs the process group of every child still listed,
grandchildren included, and exits.

Why not the parent-death signal: arming it needs code between fork and exec, which in
Python means a full fork of the daemon (3 ms at 50 MB) instead of a vfork (0.15 ms), or
an extra exec through a shim (0.8 ms); and it only ever reaches the direct child, never
the grandchildren. A pipe write per spawn costs microseconds and covers whole groups.

Why a shell script: the guardian only keeps a table and kills at the end, and a POSIX
shell does that with builtins alone (`read`, `eval`, `unset`, `kill`: no fork per
message). It costs about 1.8 MB of memory; a Python guardian cost 9.6 MB, a tenth of
the daemon at 1,000 children.

A listed pid is only killed if /proc still shows the process that was announced (same
start time), so a recycled pid is never mistaken for ours. A line `+PID START` gives the
start time instead of reading it (the tests use it to stand in for a recycled pid).
"""

from __future__ import annotations

NAME = "supervisor-guardian"  # its $0: what `ps` shows

SCRIPT = r"""
trap '' INT TERM HUP QUIT
starttime() {
    START=
    { read -r _stat < "/proc/$1/stat"; } 2>/dev/null || return 0
    _rest=${_stat##*) }
    set -f
    set -- $_rest
    set +f
    [ $# -ge 20 ] || return 0
    shift 19
    START=$1
}
while IFS=' ' read -r line given; do
    case $line in
        +*) pid=${line#+} ;;
        -*) pid=${line#-} ;;
        *) continue ;;
    esac
    case $pid in ''|*[!0-9]*) continue ;; esac
    case $line in
        -*) unset "p_$pid"; continue ;;
    esac
    case $given in
        ''|*[!0-9]*) starttime "$pid" ;;
        *) START=$given ;;
    esac
    eval "p_$pid=\${START:-gone}"
done
set | {
    killed=0
    while IFS= read -r entry; do
        case $entry in p_[0-9]*=*) ;; *) continue ;; esac
        name=${entry%%=*}
        pid=${name#p_}
        was=${entry#*=}
        was=${was#\'}
        was=${was%\'}
        starttime "$pid"
        if [ -n "$START" ] && [ "$was" != gone ] && [ "$START" != "$was" ]; then
            continue
        fi
        kill -s KILL -- "-$pid" 2>/dev/null && killed=$((killed + 1))
    done
    if [ "$killed" -gt 0 ]; then
        echo "supervisor guardian: the daemon is gone; killed $killed process group(s)" >&2
    fi
    :
}
"""


def argv() -> list[str]:
    """The guardian's command line."""
    return ["/bin/sh", "-c", SCRIPT, NAME]


def start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # Field 22; the command name (field 2) may contain spaces, so split after its ')'.
    return stat.rsplit(b")", 1)[1].split()[19].decode()
