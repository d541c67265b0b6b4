#!/usr/bin/env bash
# A single-node SLURM cluster on this machine, for tests and trials (as root; Debian's packages:
# apt-get install -y slurmctld slurmd slurm-client munge):
#
#   scripts/slurm_cluster.sh start DIR    # writes DIR/slurm.conf, starts munged, slurmctld, slurmd
#   export SLURM_CONF=DIR/slurm.conf      # what sbatch, squeue, sinfo (and submitit) read
#   scripts/slurm_cluster.sh stop DIR     # stops the three daemons by their pid files
#
# One node (this host, all its CPUs), one default partition; state, spool, logs and pid files
# under DIR. `start` returns when the node is idle (or fails after 30 s).
set -euo pipefail
action=${1:?usage: slurm_cluster.sh start|stop DIR}
dir=$(mkdir -p "${2:?usage: slurm_cluster.sh start|stop DIR}" && cd "$2" && pwd)
host=$(hostname -s)

stop() {
    for daemon in slurmd slurmctld munged; do
        if [ -f "$dir/$daemon.pid" ]; then
            pid=$(cat "$dir/$daemon.pid")
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done  # gone within 5 s
            kill -9 "$pid" 2>/dev/null || true
            rm -f "$dir/$daemon.pid"
        fi
    done
    if [ -f "$dir/munge.dir" ]; then rm -rf "$(cat "$dir/munge.dir")" "$dir/munge.dir"; fi
}

if [ "$action" = stop ]; then
    stop
    exit 0
fi
[ "$action" = start ] || { echo "usage: slurm_cluster.sh start|stop DIR" >&2; exit 2; }
for tool in munged slurmctld slurmd sinfo; do
    command -v "$tool" >/dev/null || { echo "$tool not found: apt-get install -y slurmctld slurmd slurm-client munge" >&2; exit 1; }
done
mkdir -p "$dir/state" "$dir/spool" "$dir/log"
# munge runs as user munge, who may not reach DIR (pytest's folders are 0700): its files get a
# folder of their own, named in DIR/munge.dir for `stop`; a fresh key for this cluster
munge=$(mktemp -d /tmp/rnnbench-munge.XXXXXX)
echo "$munge" > "$dir/munge.dir"
head -c 1024 /dev/urandom > "$munge/munge.key"
chmod 400 "$munge/munge.key"
chown -R munge:munge "$munge"
chmod 700 "$munge"
mkdir -p /run/munge && chown munge:munge /run/munge
runuser -u munge -- munged --key-file="$munge/munge.key" --pid-file="$munge/munged.pid" \
    --log-file="$munge/munged.log" --seed-file="$munge/munged.seed" --socket=/run/munge/munge.socket.2 --force
cp "$munge/munged.pid" "$dir/munged.pid"
cat > "$dir/slurm.conf" <<CONF
ClusterName=rnnbench
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
# a requeued job waits cred_expire seconds before it may start again (120 by default): 10 keeps the
# requeue tests short and is still ample for a step's launch on one node
AuthInfo=cred_expire=10
SchedulerType=sched/backfill
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
MpiDefault=none
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
NodeName=$host CPUs=$(nproc) RealMemory=8000 State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF="$dir/slurm.conf"
slurmctld -f "$dir/slurm.conf"
slurmd -f "$dir/slurm.conf"
for _ in $(seq 60); do
    if sinfo -h -o %T 2>/dev/null | grep -q idle; then
        echo "SLURM cluster up: node $host idle; export SLURM_CONF=$dir/slurm.conf"
        exit 0
    fi
    sleep 0.5
done
echo "the SLURM node did not become idle in 30 s; logs in $dir/log" >&2
sinfo >&2 || true
stop
exit 1
