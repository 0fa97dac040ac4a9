#!/usr/bin/env bash
# Start a throwaway single-node SLURM cluster (munge, mariadb, slurmdbd, slurmctld, slurmd) under DIR.
# Everything (keys, configs, spool, logs, database, sockets) lives in DIR; daemons are started here,
# not by systemd, on free loopback ports. Usage: start.sh [DIR]  (default: a new temp dir).
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
GPUS=${SLURM_TEST_GPUS:-2}  # fake GPUs, so that --gres=gpu:N is scheduled and accounted
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
NODE_LINE=$(slurmd -C | head -n 1 | sed "s/^NodeName=[^ ]*/NodeName=$HOST/")

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
for i in $(seq 0 $((GPUS - 1))); do  # a fake GPU is a link to /dev/null: slurmd only needs a device file
    ln -sfn /dev/null "$DIR/run/gpu$i"
    echo "NodeName=$HOST Name=gpu File=$DIR/run/gpu$i"
done >"$DIR/etc/gres.conf"

cat >"$SLURM_CONF" <<CONF
ClusterName=$CLUSTER
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$DIR/munge/munge.socket
StateSaveLocation=$DIR/spool/ctld
SlurmdSpoolDir=$DIR/spool/d
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
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
$NODE_LINE NodeAddr=127.0.0.1 Gres=gpu:$GPUS State=UNKNOWN
PartitionName=$PARTITION Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
CONF

# --- slurmdbd, then the cluster/account/user associations ---
slurmdbd </dev/null >>"$DIR/log/daemons.out" 2>&1
wait_for 30 slurmdbd slurmdbd.log sacctmgr -n list cluster
sacctmgr -i add cluster "$CLUSTER" >/dev/null
sacctmgr -i add account "$ACCOUNT" cluster="$CLUSTER" description=faceflow-test organization=faceflow >/dev/null
for u in $(echo "$USERS" | tr ' ' '\n' | sort -u); do
    sacctmgr -i add user "$u" account="$ACCOUNT" defaultaccount="$ACCOUNT" cluster="$CLUSTER" >/dev/null
done

# --- slurmctld + slurmd; wait for the node to be idle ---
slurmctld -i </dev/null >>"$DIR/log/daemons.out" 2>&1
wait_for 30 slurmctld slurmctld.log scontrol ping
slurmd </dev/null >>"$DIR/log/daemons.out" 2>&1
wait_for 60 "node $HOST (idle)" slurmd.log bash -c "sinfo -h -N -n '$HOST' -o %t | grep -qx idle"

cat >"$DIR/env.sh" <<ENV
export SLURM_CONF=$SLURM_CONF
ENV
echo "$DIR"
