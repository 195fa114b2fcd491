#!/usr/bin/env bash
# Start a single-node SLURM cluster on this machine, for testing the workflow's SLURM profile:
#
#   sudo scripts/slurm/start_local_slurm.sh        # install if needed, configure, start, wait for idle
#   scripts/slurm/stop_local_slurm.sh              # stop the three daemons again
#
# The recipe is the project's tested one (Debian 12, root, no systemd, no cgroups, Slurm 22.05):
# munge + slurmctld + slurmd started by hand, no accounting database (so the profile must query job
# states with squeue, never sacct). What this script adds to the recipe:
#   - idempotent: packages are installed only when missing, daemons already running with the same
#     slurm.conf are left alone (a changed config restarts them);
#   - the partitions the profile workflow/profiles/slurm names, `cpu` (default) and `gpu`, both on
#     this one node, so the profile is tested unchanged;
#   - QD_SLURM_GPUS (default 2) fake "gpu" GRES on the node, so jobs asking `--gpus=1` are
#     scheduled the way they are on a GPU cluster. Slurm drops a GPU without a device file, so each
#     fake GPU is a symlink to /dev/null; SLURM then sets CUDA_VISIBLE_DEVICES in the job, but torch
#     finds no CUDA here and trains on the CPU. QD_SLURM_GPUS=0 turns them off.
# It refuses to replace an /etc/slurm/slurm.conf it did not write (QD_SLURM_FORCE=1 overrides).
# Exit status: 0 when the node is idle and a test job ran; 1 when not root, apt is unavailable, a
# foreign slurm.conf is in the way, or a daemon does not come up (its log is printed).
set -euo pipefail

die() { echo "start_local_slurm: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root (it installs packages and starts munged/slurmctld/slurmd); try: sudo $0"

GPUS=${QD_SLURM_GPUS:-2}
[[ "$GPUS" =~ ^[0-9]+$ ]] || die "QD_SLURM_GPUS must be a non-negative integer, got '$GPUS'"
CONF_DIR=/etc/slurm
LOG_DIR=/var/log/slurm

# ---- 1. packages (slurm-wlm 22.05 and munge from Debian 12) --------------------------------------
missing=()
for pkg in slurm-wlm munge; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  command -v apt-get >/dev/null || die "packages missing (${missing[*]}) and apt-get is not available; install slurm-wlm and munge by other means"
  echo "start_local_slurm: installing ${missing[*]} with apt-get" >&2
  export DEBIAN_FRONTEND=noninteractive
  # The package scripts try to start the daemons through invoke-rc.d; without systemd that is
  # denied (harmless), which is why every daemon is started by hand below.
  apt-get update -q >/dev/null || die "apt-get update failed (no network or no Debian mirror?)"
  apt-get install -y -q --no-install-recommends slurm-wlm munge >/dev/null \
    || die "apt-get install slurm-wlm munge failed"
fi

# ---- 2. munge: the authentication every SLURM command uses ---------------------------------------
if [ ! -s /etc/munge/munge.key ]; then  # the postinst creates one; make one only if it is missing
  dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
fi
chown munge:munge /etc/munge/munge.key
chmod 400 /etc/munge/munge.key
install -d -o munge -g munge -m 755 /run/munge

alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

if ! alive /run/munge/munged.pid; then
  runuser -u munge -- /usr/sbin/munged --force   # --force: a stale socket from a killed run is reused
fi
munge -n | unmunge >/dev/null || die "munge does not work (see /var/log/munge/munged.log)"

# ---- 3. slurm.conf (and gres.conf) --------------------------------------------------------------
H=$(hostname -s)
MEM=$(( $(free -m | awk '/^Mem:/{print $2}') - 1024 ))   # above the detected memory the node drains
NCPU=$(nproc)
GRES_LINE=""; NODE_GRES=""
if [ "$GPUS" -gt 0 ]; then GRES_LINE="GresTypes=gpu"; NODE_GRES="Gres=gpu:$GPUS"; fi

new_conf=$(mktemp); new_gres=$(mktemp)
trap 'rm -f "$new_conf" "$new_gres"' EXIT
cat > "$new_conf" <<EOC
# Written by qd-repro scripts/slurm/start_local_slurm.sh: one node on localhost, for tests only.
ClusterName=qdlocal
SlurmctldHost=$H(127.0.0.1)
SlurmUser=slurm
AuthType=auth/munge
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
# no cgroups in this kind of sandbox: plain /proc process tracking, no task binding
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MpiDefault=none
# no slurmdbd: sacct cannot answer, the Snakemake profile queries squeue instead
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
# squeue keeps finished jobs this long; the plugin needs MinJobAge >= 3 x its first status delay
MinJobAge=300
KillWait=5
$GRES_LINE
NodeName=$H NodeAddr=127.0.0.1 CPUs=$NCPU RealMemory=$MEM $NODE_GRES State=UNKNOWN
PartitionName=cpu Nodes=ALL Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=ALL Default=NO MaxTime=INFINITE State=UP
EOC

install -d -m 755 "$CONF_DIR"
MARK="# Written by qd-repro scripts/slurm/start_local_slurm.sh"
if [ -s "$CONF_DIR/slurm.conf" ] && ! head -1 "$CONF_DIR/slurm.conf" | grep -qF "$MARK" \
   && [ "${QD_SLURM_FORCE:-0}" != 1 ]; then
  die "$CONF_DIR/slurm.conf exists and was not written by this script (a real cluster node?); not touching it. Set QD_SLURM_FORCE=1 to replace it."
fi
changed=0
cmp -s "$new_conf" "$CONF_DIR/slurm.conf" || changed=1
FAKE_GPU_DIR=/var/lib/slurm/qd-fake-gpus
if [ "$GPUS" -gt 0 ]; then
  install -d -m 755 "$FAKE_GPU_DIR"
  for i in $(seq 0 $((GPUS - 1))); do
    ln -sfn /dev/null "$FAKE_GPU_DIR/gpu$i"
    echo "NodeName=$H Name=gpu File=$FAKE_GPU_DIR/gpu$i" >> "$new_gres"
  done
fi
if [ -s "$new_gres" ] || [ -e "$CONF_DIR/gres.conf" ]; then
  cmp -s "$new_gres" "$CONF_DIR/gres.conf" || changed=1
fi

stop_slurm_daemons() {
  local pidfile
  for pidfile in /run/slurmd.pid /run/slurmctld.pid; do
    if alive "$pidfile"; then
      kill "$(cat "$pidfile")"
      for _ in $(seq 1 50); do alive "$pidfile" || break; sleep 0.2; done
    fi
  done
}

if [ "$changed" -eq 1 ]; then
  stop_slurm_daemons           # a running daemon would keep the old config
  cp "$new_conf" "$CONF_DIR/slurm.conf"
  chmod 644 "$CONF_DIR/slurm.conf"
  if [ -s "$new_gres" ]; then cp "$new_gres" "$CONF_DIR/gres.conf"; chmod 644 "$CONF_DIR/gres.conf"
  else rm -f "$CONF_DIR/gres.conf"; fi
fi
install -d -o slurm -g slurm /var/lib/slurm/slurmctld "$LOG_DIR"
install -d /var/lib/slurm/slurmd

# ---- 4. daemons (they daemonize themselves and write their PID files) ----------------------------
if ! alive /run/slurmctld.pid; then
  /usr/sbin/slurmctld || { tail -20 "$LOG_DIR/slurmctld.log" >&2; die "slurmctld did not start"; }
fi
if ! alive /run/slurmd.pid; then
  /usr/sbin/slurmd || { tail -20 "$LOG_DIR/slurmd.log" >&2; die "slurmd did not start"; }
fi

state=""
for _ in $(seq 1 60); do
  state=$(sinfo -h -N -o '%t' 2>/dev/null | head -1 || true)
  case "$state" in
    idle|mix|alloc) break ;;
    inval*) break ;;   # the node's registration was rejected: waiting will not help
    drain*|down*) scontrol update NodeName="$H" State=RESUME >/dev/null 2>&1 || true ;;
  esac
  sleep 1
done
case "$state" in
  idle|mix|alloc) ;;
  *) scontrol show node "$H" | grep -E 'State=|Reason=' >&2 || true
     tail -20 "$LOG_DIR/slurmctld.log" >&2
     die "node $H is '${state:-unknown}', not idle (node state and slurmctld log above)" ;;
esac

out=$(srun -p cpu -t 1 -N 1 hostname 2>&1) || die "test job failed: $out"
echo "start_local_slurm: node $H up ($NCPU CPUs, ${MEM} MB, $GPUS fake GPUs), partitions cpu (default) and gpu"
sinfo
