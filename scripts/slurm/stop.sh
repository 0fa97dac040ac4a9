#!/usr/bin/env bash
# Stop every daemon that scripts/slurm/start.sh started under DIR (by the pid files it wrote there),
# then remove DIR unless --keep is given. Usage: stop.sh DIR [--keep]
set -uo pipefail

DIR=${1:?usage: stop.sh DIR [--keep]}
KEEP=${2:-}
[ -d "$DIR" ] || { echo "stop.sh: no cluster dir $DIR" >&2; exit 0; }
export SLURM_CONF="$DIR/etc/slurm.conf"

[ -f "$SLURM_CONF" ] && timeout 10 scancel --full --user="$(id -un)" >/dev/null 2>&1

pids=()
for daemon in slurmd slurmctld slurmdbd mariadb munged; do  # TERM them all, then wait up to 15 s
    pid=$(cat "$DIR/run/$daemon.pid" 2>/dev/null) || continue
    [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null && pids+=("$daemon:$pid")
done
for entry in "${pids[@]}"; do
    pid=${entry#*:}
    for _ in $(seq 75); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null || continue
    echo "stop.sh: ${entry%%:*} (pid $pid) ignored SIGTERM, killing" >&2
    kill -KILL "$pid" 2>/dev/null
done

[ "$KEEP" = "--keep" ] || rm -rf "$DIR"
