#!/usr/bin/env bash
# Stop every daemon that scripts/slurm/start.sh started under DIR (by the pid files it wrote there),
# end what still runs in the network namespaces it made and remove them and their bridge
# (DIR/run/netns.list), then remove DIR unless --keep is given. Usage: stop.sh DIR [--keep]
set -uo pipefail

DIR=${1:?usage: stop.sh DIR [--keep]}
KEEP=${2:-}
[ -d "$DIR" ] || { echo "stop.sh: no cluster dir $DIR" >&2; exit 0; }
export SLURM_CONF="$DIR/etc/slurm.conf"

[ -f "$SLURM_CONF" ] && timeout 10 scancel --full --user="$(id -un)" >/dev/null 2>&1

pids=()
for pidfile in "$DIR"/run/slurmd-*.pid "$DIR"/run/{slurmctld,slurmdbd,mariadb,munged}.pid; do  # TERM all, wait 15 s
    pid=$(cat "$pidfile" 2>/dev/null) || continue
    daemon=$(basename "$pidfile" .pid)
    [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null && pids+=("$daemon:$pid")
done
for entry in "${pids[@]}"; do
    pid=${entry#*:}
    for _ in $(seq 75); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null || continue
    echo "stop.sh: ${entry%%:*} (pid $pid) ignored SIGTERM, killing" >&2
    kill -KILL "$pid" 2>/dev/null
done

if [ -f "$DIR/run/netns.list" ]; then
    while read -r kind name; do
        [ "$kind" = netns ] || continue
        for pid in $(ip netns pids "$name" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null; done
        ip netns delete "$name" 2>/dev/null || echo "stop.sh: could not delete network namespace $name" >&2
    done <"$DIR/run/netns.list"
    while read -r kind name; do
        [ "$kind" = bridge ] || continue
        ip link delete "$name" 2>/dev/null || echo "stop.sh: could not delete bridge $name" >&2
    done <"$DIR/run/netns.list"
fi

[ "$KEEP" = "--keep" ] || rm -rf "$DIR"
