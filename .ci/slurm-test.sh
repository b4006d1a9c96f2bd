#!/usr/bin/env bash
# A real Slurm test: a single-node Slurm (Debian's slurmctld + slurmd + munge, no accounting) on
# this machine, the tiny study (config/test.yaml) run through profiles/slurm, checks that its jobs
# went through Slurm, and its tables compared with a local run's. Stops the daemons it started.
#
#   sudo .ci/slurm-test.sh            (root: it installs packages and writes /etc/slurm/slurm.conf)
#
# Environment: M4I_SLURM_WORK (working folder, default a new /tmp/m4i-slurm.*), M4I_SLURM_LIMIT
# (seconds before each Snakemake run is killed, default 2400), M4I_LOCAL_RUN (the working folder
# of a finished local run of config/test.yaml at this commit, to skip the local run),
# M4I_SLURM_TARGET (default: all; else space-separated files under results/test/, compared byte
# for byte with the local run's: a quick check of the machinery).
# Why the default path /etc/slurm/slurm.conf: the plugin's job step drops SLURM_CONF from its
# environment, so a cluster config elsewhere is not seen inside jobs. A slurm.conf there that this
# script did not write is left alone (the script stops).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
PY=${PY:-$REPO/.venv/bin/python}
WORK=${M4I_SLURM_WORK:-$(mktemp -d /tmp/m4i-slurm.XXXXXX)}
LIMIT=${M4I_SLURM_LIMIT:-2400}
TARGET=${M4I_SLURM_TARGET:-all}
if [ "$TARGET" = all ]; then TARGETS=(all); FILES=(); else
    read -r -a FILES <<<"$TARGET"; TARGETS=("${FILES[@]/#/results/test/}"); fi
CONFIG=$REPO/config/test.yaml
STUDY=test
MARK="# written by m4i .ci/slurm-test.sh"
CONF=/etc/slurm/slurm.conf
export PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 DVC_NO_ANALYTICS=1
mkdir -p "$WORK"
say() { echo "[slurm-test] $*"; }
fail() { echo "[slurm-test] FAIL: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || fail "needs root (installs Slurm, starts its daemons)"
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    say "installing Slurm and munge from Debian's packages"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        slurmctld slurmd slurm-client munge >"$WORK/apt.log" 2>&1 || { tail -20 "$WORK/apt.log"; fail "apt-get install"; }
fi
if [ -e "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
    fail "$CONF exists and was not written by this script; not touching a real cluster's config"
fi

STARTED=()  # pid files of the daemons this script started
cleanup() {
    local f i
    # Jobs still queued or running (a run killed at its limit) are cancelled while the daemons still
    # run: stopping slurmd leaves a running job's slurmstepd and its Snakemake working on (seen: one
    # kept a core busy for 40 minutes after a timed-out test). Only this script's own cluster: it
    # refuses a slurm.conf it did not write.
    if [ ${#STARTED[@]} -gt 0 ] && [ -n "$(squeue -h -o %i 2>/dev/null)" ]; then
        scancel --quiet $(squeue -h -o %i) 2>/dev/null || true
        for i in $(seq 30); do [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break; sleep 1; done
    fi
    for f in "${STARTED[@]}"; do
        [ -s "$f" ] && kill "$(cat "$f")" 2>/dev/null || true
    done
}
trap cleanup EXIT

# munge: the key and the daemon (as the munge user), unless one already answers.
mkdir -p /run/munge /var/log/munge /var/lib/munge /etc/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge /etc/munge
[ -s /etc/munge/munge.key ] || { mungekey --create --keyfile /etc/munge/munge.key; chown munge:munge /etc/munge/munge.key; }
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    runuser -u munge -- munged --pid-file=/run/munge/munged.pid
    STARTED+=(/run/munge/munged.pid)
    sleep 1
    munge -n | unmunge >/dev/null || fail "munged does not answer"
fi

# slurm.conf: one node of this machine's size (CPUs from nproc, memory 90 % of MemTotal), one
# fake GPU (gres on /dev/null), a CPU partition (default) and a GPU partition with the names of
# profiles/slurm/partitions.yaml. MinJobAge 7200 s: squeue must still list a finished job when the
# plugin polls (the plugin falls back to sacct below 3x its first poll interval), and every job of
# the run must still be known to the controller when the checks below read its state and partition
# (with 600 s the first jobs of a 30-minute run were gone: the GPU-partition check failed).
HOST=$(hostname -s)
CPUS=$(nproc)
MEM=$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
cat >"$CONF" <<EOF
$MARK
ClusterName=m4i-ci
SlurmctldHost=$HOST
AuthType=auth/munge
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MinJobAge=7200
GresTypes=gpu
NodeName=$HOST CPUs=$CPUS RealMemory=$MEM Gres=gpu:1 State=UNKNOWN
PartitionName=cpu Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$HOST Default=NO MaxTime=INFINITE State=UP
EOF
cat >/etc/slurm/gres.conf <<EOF
$MARK
NodeName=$HOST Name=gpu File=/dev/null
EOF
# A fresh controller state: job ids and the log below start from this run.
rm -rf /var/spool/slurmctld/* /var/log/slurm/slurmctld.log
slurmctld -i && STARTED+=(/run/slurmctld.pid)
slurmd && STARTED+=(/run/slurmd.pid)
for _ in $(seq 60); do
    sinfo -h -o %t -p cpu 2>/dev/null | grep -qx idle && break
    sleep 1
done
sinfo -h -o %t -p cpu | grep -qx idle || { sinfo; tail -20 /var/log/slurm/slurmctld.log; fail "node not idle"; }
say "Slurm up: $(sinfo -h -o '%P %D %c %m %G %t' | tr '\n' ';')"

# The study through the profile. squeue status (no accounting here), first poll after 5 s,
# keep the logs of successful jobs (checked below); one CPU-only rule asks for a GPU, so the GPU
# partition and the fake GPU are exercised for real (the job itself runs on the CPU: device: cpu).
SM=("$PY" -m snakemake -s "$REPO/Snakefile" --configfile "$CONFIG")
say "tiny study through profiles/slurm in $WORK/slurm (limit ${LIMIT}s)"
start=$(date +%s)
rc=0
timeout -s KILL "$LIMIT" "${SM[@]}" -d "$WORK/slurm" --profile "$REPO/profiles/slurm" \
    --cores "$CPUS" --slurm-status-command squeue --slurm-init-seconds-before-status-checks 5 \
    --slurm-keep-successful-logs --slurm-logdir "$WORK/slurm/slurm-logs" \
    --set-resources pretrain_backbone:gpu=1 -- "${TARGETS[@]}" >"$WORK/slurm.log" 2>&1 || rc=$?
[ "$rc" = 0 ] || { tail -60 "$WORK/slurm.log"; fail "snakemake on Slurm (rc $rc; 137: killed at the time limit)"; }
say "Slurm run took $(( $(date +%s) - start )) s"

# Jobs really went through Slurm: sbatch submissions in the controller's log, one Slurm log per
# submission, every one of them COMPLETED in the controller's memory (MinJobAge), the GPU job on
# the GPU partition.
n_submit=$(grep -c "_slurm_rpc_submit_batch_job: JobId=" /var/log/slurm/slurmctld.log || true)
n_logs=$(find "$WORK/slurm/slurm-logs" -name '*.log' | wc -l)
say "$n_submit sbatch submissions, $n_logs Slurm job logs"
[ "$n_submit" -gt 0 ] || fail "no job was submitted to Slurm"
[ "$n_logs" -ge "$n_submit" ] || fail "fewer Slurm logs ($n_logs) than submissions ($n_submit)"
[ "$TARGET" != all ] || [ "$n_submit" -le 40 ] || fail "$n_submit Slurm jobs for the tiny study (at most 40 wanted)"
not_done=$(squeue -h -t all -o '%i %T %P' | grep -v COMPLETED || true)
[ -z "$not_done" ] || fail "Slurm jobs not COMPLETED: $not_done"
if grep -q "rule pretrain_backbone:" "$WORK/slurm.log"; then
    scontrol -o show job | grep "Partition=gpu" | grep -Eq "gpu[:=]1" || fail "no job ran on the gpu partition with a GPU"
    say "the GPU job ran on the gpu partition with one GPU"
fi

# The same study locally, then the tables compared without their timing columns.
LOCAL=${M4I_LOCAL_RUN:-$WORK/local}
if [ -z "${M4I_LOCAL_RUN:-}" ]; then
    say "tiny study locally in $LOCAL"
    timeout -s KILL "$LIMIT" "${SM[@]}" -d "$LOCAL" --cores "$CPUS" -- "${TARGETS[@]}" >"$WORK/local.log" 2>&1 \
        || { tail -40 "$WORK/local.log"; fail "local run"; }
fi
"$PY" "$REPO/.ci/compare_runs.py" "$LOCAL/results/$STUDY" "$WORK/slurm/results/$STUDY" "${FILES[@]}"
say "OK"
