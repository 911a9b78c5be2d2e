#!/usr/bin/env bash
# A one-node Slurm from Debian's packages, then a class graded through it (dask-jobqueue):
#   sudo bash benchmarks/slurm_one_node.sh [SUBMISSIONS] [OUT] [BUDGET]
#
# 1. apt installs munge, slurmctld, slurmd and slurm-client (Debian 12: Slurm 22.05), writes a munge
#    key and a slurm.conf for this machine alone (one partition "debug", all its cores and memory);
# 2. starts munged, slurmctld and slurmd (no systemd needed) and waits for the node to be idle;
# 3. writes build/slurm-cluster.toml (two Slurm jobs, one notebook at a time each, this checkout's venv)
#    and runs `grader grade --cluster slurm` on SUBMISSIONS (default: tests/fixtures/notebooks'
#    correct and integer_labels, quick budget), then prints sacct's view of the jobs.
# Root only (it installs packages and starts daemons). Not part of `make setup`.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SUBMISSIONS=${1:-build/slurm-submissions}
OUT=${2:-build/slurm-out}
BUDGET=${3:-quick}
PY=${PYTHON:-$ROOT/.venv/bin/python}

if ! command -v slurmctld >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq munge slurmctld slurmd slurm-client >/dev/null
fi

# ---- munge: a key, a daemon
if [ ! -s /etc/munge/munge.key ]; then
  dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
fi
chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
mkdir -p /run/munge && chown munge:munge /run/munge
pgrep -x munged >/dev/null || runuser -u munge -- /usr/sbin/munged

# ---- slurm.conf for this one machine
HOST=$(hostname -s)
CPUS=$(nproc)
MEM_MB=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
chown slurm:slurm /var/spool/slurmctld /var/log/slurm 2>/dev/null || true
cat > /etc/slurm/slurm.conf <<CONF
ClusterName=grader
SlurmctldHost=$HOST
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmdSpoolDir=/var/spool/slurmd
StateSaveLocation=/var/spool/slurmctld
SlurmUser=root
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
NodeName=$HOST CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
CONF
printf 'CgroupPlugin=cgroup/v1\nIgnoreSystemd=yes\n' > /etc/slurm/cgroup.conf  # 22.05 has no "disabled"

pgrep -x slurmctld >/dev/null || slurmctld
pgrep -x slurmd >/dev/null || slurmd
for _ in $(seq 60); do
  sinfo -h -o '%T' 2>/dev/null | grep -q -E '^idle' && break
  scontrol update NodeName="$HOST" State=RESUME >/dev/null 2>&1 || true
  sleep 1
done
sinfo

# ---- a few notebooks and the cluster settings
if [ ! -d "$SUBMISSIONS" ]; then
  mkdir -p "$SUBMISSIONS"
  cp tests/fixtures/notebooks/correct.ipynb tests/fixtures/notebooks/integer_labels.ipynb "$SUBMISSIONS"/
fi
mkdir -p build
cat > build/slurm-cluster.toml <<CONF
[slurm]
jobs = 2
wait_s = 300

[slurm.cluster]
cores = 1
processes = 1
memory = "4GiB"
walltime = "01:00:00"
queue = "debug"
python = "$PY"
job_script_prologue = [
  "export PYTHONPATH=$ROOT",
  "export GRADER_PROJECT_ROOT=${GRADER_PROJECT_ROOT:-$ROOT}",
  "export GRADER_KERAS_HOME=${GRADER_KERAS_HOME:-$ROOT/.data/keras}",
]
CONF

echo "== grading $SUBMISSIONS through Slurm → $OUT"
rm -rf "$OUT"
START=$(date +%s)
PYTHONPATH=$ROOT "$PY" -m grader grade --assignment kadai8 --submissions "$SUBMISSIONS" --out "$OUT" \
  --budget "$BUDGET" --threads 1 --cluster slurm --cluster-config build/slurm-cluster.toml \
  ${GRADER_KERAS_HOME:+--keras-home "$GRADER_KERAS_HOME"} ${GRADER_PROJECT_ROOT:+--project "$GRADER_PROJECT_ROOT"} \
  ${GRADER_EXTRA:-}
echo "wall time: $(( $(date +%s) - START )) s"
sacct -a -X -o JobID,JobName,State,Elapsed 2>/dev/null || squeue -a
