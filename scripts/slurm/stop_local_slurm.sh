#!/usr/bin/env bash
# Stop the single-node SLURM started by scripts/slurm/start_local_slurm.sh:
#
#   sudo scripts/slurm/stop_local_slurm.sh
#
# Daemons are stopped by the PIDs in their PID files (slurmd first, then slurmctld, then munged),
# never by name. Running jobs are killed with slurmd. Safe to run when nothing is running.
set -uo pipefail

[ "$(id -u)" -eq 0 ] || { echo "stop_local_slurm: must run as root" >&2; exit 1; }

status=0
for pidfile in /run/slurmd.pid /run/slurmctld.pid /run/munge/munged.pid; do
  [ -s "$pidfile" ] || continue
  pid=$(cat "$pidfile")
  kill -0 "$pid" 2>/dev/null || { rm -f "$pidfile"; continue; }
  kill "$pid"
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  if kill -0 "$pid" 2>/dev/null; then
    echo "stop_local_slurm: PID $pid ($pidfile) still running after 10 s" >&2
    status=1
  else
    rm -f "$pidfile"
  fi
done
[ "$status" -eq 0 ] && echo "stop_local_slurm: stopped"
exit "$status"
