#!/usr/bin/env bash
# Stop every daemon that scripts/slurm/start.sh started under DIR (by the pid files it wrote there),
# then remove DIR unless --keep is given. Usage: stop.sh DIR [--keep]
set -uo pipefail

DIR=${1:?usage: stop.sh DIR [--keep]}
KEEP=${2:-}
[ -d "$DIR" ] || { echo "stop.sh: no cluster dir $DIR" >&2; exit 0; }
export SLURM_CONF="$DIR/etc/slurm.conf"

[ -f "$SLURM_CONF" ] && timeout 10 scancel --full --user="${USER:-root}" >/dev/null 2>&1

stop_pid() {  # stop_pid NAME: TERM the daemon in DIR/run/NAME.pid, KILL it after 15 s
    local file="$DIR/run/$1.pid" pid
    [ -f "$file" ] || return 0
    pid=$(cat "$file" 2>/dev/null) || return 0
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 75); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.2; done
    echo "stop.sh: $1 (pid $pid) ignored SIGTERM, killing" >&2
    kill -KILL "$pid" 2>/dev/null
}
for daemon in slurmd slurmctld slurmdbd mariadb munged; do stop_pid "$daemon"; done

[ "$KEEP" = "--keep" ] || rm -rf "$DIR"
