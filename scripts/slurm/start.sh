#!/usr/bin/env bash
# Start a throwaway SLURM cluster (munge, mariadb, slurmdbd, slurmctld, slurmd) under DIR.
# Everything (keys, configs, spool, logs, database, sockets) lives in DIR; daemons are started here,
# not by systemd, on free ports. Usage: start.sh [DIR]  (default: a new temp dir).
# One node (this host, on loopback) by default; SLURM_TEST_NODES=N (root, iproute2) makes N nodes
# node0..node{N-1}: each slurmd in a network namespace of its own (own address on a bridge, own host
# name through unshare --uts), slurmctld on the host side of the bridge. DIR/run/netns.list names the
# namespaces and the bridge for stop.sh.
# On success prints DIR; `source DIR/env.sh` sets SLURM_CONF for sbatch/sacct/snakemake.
# Stop it with scripts/slurm/stop.sh DIR. On failure the daemons started so far are stopped, DIR kept.
set -euo pipefail

DIR=${1:-$(mktemp -d /tmp/faceflow-slurm.XXXXXX)}
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
stop_on_failure() { [ $? -eq 0 ] || bash "$(dirname "${BASH_SOURCE[0]}")/stop.sh" "$DIR" --keep; }
trap stop_on_failure EXIT
CLUSTER=faceflow
PARTITION=${SLURM_TEST_PARTITION:-debug}
ACCOUNT=${SLURM_TEST_ACCOUNT:-faceflow}
GPUS=${SLURM_TEST_GPUS:-2}  # fake GPUs per node, so that --gres=gpu:N is scheduled and accounted
NODES=${SLURM_TEST_NODES:-1}
USERS="root ${USER:-root}"
DB_PASS=$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')

for tool in munged mungekey mariadbd mariadb-install-db mariadb slurmdbd slurmctld slurmd sacctmgr sinfo; do
    command -v "$tool" >/dev/null || { echo "start.sh: $tool not found (run scripts/slurm/install.sh)" >&2; exit 2; }
done

mkdir -p "$DIR"/{etc,log,run,munge,spool/ctld,spool/d,mysql}
chmod 700 "$DIR/munge" "$DIR/etc"
export SLURM_CONF="$DIR/etc/slurm.conf"

die() { echo "start.sh: $1 (logs in $DIR/log)" >&2; tail -n 20 "$DIR/log/$2" >&2 2>/dev/null || true; exit 1; }
wait_for() {  # wait_for SECONDS DESCRIPTION LOGFILE COMMAND...: poll COMMAND until it succeeds
    local limit=$1 what=$2 log=$3; shift 3
    local deadline=$((SECONDS + limit))
    while [ $SECONDS -lt $deadline ]; do timeout 10 "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
    die "$what did not come up within ${limit}s" "$log"
}
free_ports() {  # print N distinct free TCP ports on 127.0.0.1
    "${PYTHON:-python3}" - "$1" <<'PY'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}
read -r DB_PORT DBD_PORT CTLD_PORT SLURMD_PORT <<<"$(free_ports 4)"
HOST=$(hostname -s)
NODE_SPEC=$(slurmd -C | head -n 1 | sed "s/^NodeName=[^ ]* //")  # CPUs=... RealMemory=... of this machine

# --- nodes: names and addresses (and for several, their network namespaces on a bridge) ---
CTLD_ADDR=127.0.0.1
NODE_NAMES=("$HOST")
NODE_ADDRS=(127.0.0.1)
if [ "$NODES" -gt 1 ]; then
    for tool in ip unshare nsenter; do
        command -v "$tool" >/dev/null || { echo "start.sh: $tool not found (needed for SLURM_TEST_NODES=$NODES)" >&2; exit 2; }
    done
    TAG=$(head -c 3 /dev/urandom | od -An -tx1 | tr -d ' \n')
    BRIDGE=ffbr$TAG
    for _ in $(seq 50); do  # a 10.231.X.0/24 no interface of this host is on
        NET=10.231.$((RANDOM % 250 + 2))
        ip -4 -o addr show | grep -q " $NET\." || break
    done
    ip link add "$BRIDGE" type bridge
    echo "bridge $BRIDGE" >>"$DIR/run/netns.list"
    ip addr add "$NET.1/24" dev "$BRIDGE"
    ip link set "$BRIDGE" up
    CTLD_ADDR=$NET.1
    NODE_NAMES=()
    NODE_ADDRS=()
    for i in $(seq 0 $((NODES - 1))); do
        ns=faceflow-$TAG-node$i
        ip netns add "$ns"
        echo "netns $ns" >>"$DIR/run/netns.list"
        ip link add "ffv$TAG$i" type veth peer name eth0 netns "$ns"
        ip link set "ffv$TAG$i" master "$BRIDGE" up
        ip -n "$ns" addr add "$NET.$((i + 2))/24" dev eth0
        ip -n "$ns" link set eth0 up
        ip -n "$ns" link set lo up
        NODE_NAMES+=("node$i")
        NODE_ADDRS+=("$NET.$((i + 2))")
    done
fi

# --- munge: a fresh key and a private socket ---
mungekey --create --keyfile="$DIR/munge/munge.key" >/dev/null
munged --force --key-file="$DIR/munge/munge.key" --socket="$DIR/munge/munge.socket" \
    --pid-file="$DIR/run/munged.pid" --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/munged.seed" </dev/null >>"$DIR/log/daemons.out" 2>&1
wait_for 10 munged munged.log test -S "$DIR/munge/munge.socket"

# --- mariadb on 127.0.0.1:DB_PORT, data in DIR/mysql ---
mariadb-install-db --no-defaults --datadir="$DIR/mysql" --user=root --skip-test-db \
    --auth-root-authentication-method=socket >"$DIR/log/mariadb-install.log" 2>&1 || die "mariadb-install-db failed" mariadb-install.log
setsid mariadbd --no-defaults --datadir="$DIR/mysql" --user=root \
    --socket="$DIR/run/mariadb.sock" --port="$DB_PORT" --bind-address=127.0.0.1 --skip-name-resolve \
    --pid-file="$DIR/run/mariadb.pid" --log-error="$DIR/log/mariadb.log" \
    --innodb-buffer-pool-size=64M --innodb-lock-wait-timeout=900 </dev/null >>"$DIR/log/daemons.out" 2>&1 &
echo $! >"$DIR/run/mariadb.pid"
wait_for 30 mariadb mariadb.log mariadb --no-defaults --socket="$DIR/run/mariadb.sock" -u root -e "SELECT 1"
mariadb --no-defaults --socket="$DIR/run/mariadb.sock" -u root <<SQL
CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
SQL

# --- configs ---
cat >"$DIR/etc/slurmdbd.conf" <<CONF
AuthType=auth/munge
AuthInfo=socket=$DIR/munge/munge.socket
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
PidFile=$DIR/run/slurmdbd.pid
LogFile=$DIR/log/slurmdbd.log
DebugLevel=info
CONF
chmod 600 "$DIR/etc/slurmdbd.conf"
for node in "${NODE_NAMES[@]}"; do  # a fake GPU is a link to /dev/null: slurmd only needs a device file
    for i in $(seq 0 $((GPUS - 1))); do
        ln -sfn /dev/null "$DIR/run/$node-gpu$i"
        echo "NodeName=$node Name=gpu File=$DIR/run/$node-gpu$i"
    done
    mkdir -p "$DIR/spool/d/$node"
done >"$DIR/etc/gres.conf"
NODE_LINES=$(for i in "${!NODE_NAMES[@]}"; do
    echo "NodeName=${NODE_NAMES[$i]} NodeAddr=${NODE_ADDRS[$i]} $NODE_SPEC Gres=gpu:$GPUS State=UNKNOWN"
done)

cat >"$SLURM_CONF" <<CONF
ClusterName=$CLUSTER
SlurmctldHost=$HOST($CTLD_ADDR)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$DIR/munge/munge.socket
StateSaveLocation=$DIR/spool/ctld
SlurmdSpoolDir=$DIR/spool/d/%n
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd-%n.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$DBD_PORT
AccountingStoragePass=$DIR/munge/munge.socket
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
MpiDefault=none
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
MinJobAge=300
DefMemPerCPU=1024
GresTypes=gpu
AccountingStorageTRES=gres/gpu
$NODE_LINES
PartitionName=$PARTITION Nodes=$(IFS=,; echo "${NODE_NAMES[*]}") Default=YES MaxTime=INFINITE State=UP
CONF

# --- slurmdbd, then the cluster/account/user associations ---
slurmdbd </dev/null >>"$DIR/log/daemons.out" 2>&1
wait_for 30 slurmdbd slurmdbd.log sacctmgr -n list cluster
sacctmgr -i add cluster "$CLUSTER" >/dev/null
sacctmgr -i add account "$ACCOUNT" cluster="$CLUSTER" description=faceflow-test organization=faceflow >/dev/null
for u in $(echo "$USERS" | tr ' ' '\n' | sort -u); do
    sacctmgr -i add user "$u" account="$ACCOUNT" defaultaccount="$ACCOUNT" cluster="$CLUSTER" >/dev/null
done

# --- slurmctld + slurmd; wait for the nodes to be idle ---
slurmctld -i </dev/null >>"$DIR/log/daemons.out" 2>&1
wait_for 30 slurmctld slurmctld.log scontrol ping
# Each slurmd runs in a mount namespace of its own that shows DIR/etc at /etc/slurm, so that its jobs find
# the config where a real node has it (Snakemake 9's SLURM job step drops SLURM_CONF before its srun).
node_config="mount --make-rprivate / && mount --bind '$DIR/etc' /etc/slurm"
if [ "$NODES" -gt 1 ]; then
    for i in "${!NODE_NAMES[@]}"; do  # the node's name is its host name: slurmd finds itself in slurm.conf
        # nsenter, not `ip netns exec`, which mounts a fresh /sys without the cgroup tree slurmd reads
        nsenter --net="/run/netns/faceflow-$TAG-node$i" unshare --uts --mount \
            sh -c "$node_config && hostname ${NODE_NAMES[$i]} && exec slurmd" </dev/null >>"$DIR/log/daemons.out" 2>&1
    done
else
    unshare --mount sh -c "$node_config && exec slurmd" </dev/null >>"$DIR/log/daemons.out" 2>&1
fi
for node in "${NODE_NAMES[@]}"; do
    wait_for 60 "node $node (idle)" "slurmd-$node.log" bash -c "sinfo -h -N -n '$node' -o %t | grep -qx idle"
done
printf '%s\n' "${NODE_NAMES[@]}" >"$DIR/nodes"

cat >"$DIR/env.sh" <<ENV
export SLURM_CONF=$SLURM_CONF
ENV
echo "$DIR"
