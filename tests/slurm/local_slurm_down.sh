#!/usr/bin/env bash
# local_slurm_down.sh - stop only the daemons that local_slurm_up.sh started.
# Reads $SLURM_LOCAL_PREFIX/started (lines "<name> <pidfile>", written by the up script).
# If this script's slurmctld is among them, it first cancels the cluster's remaining jobs
# and waits (bounded) until they are gone, so no job processes outlive slurmd. It then stops
# the daemons in reverse start order (slurmd, slurmctld, munged) by the pid in each pid file,
# after checking that /proc/<pid>/comm still is <name> (protects against reused pids).
# A cluster that the up script merely reused has no 'started' entries and is left alone.
# Never uses pkill/killall. State, logs and slurm.conf are kept.
#
# Knobs: SLURM_LOCAL_PREFIX [${TMPDIR:-/tmp}/slurmlocal], SLURM_DOWN_TIMEOUT [20] seconds
# per daemon before SIGKILL (and for the jobs to go).
set -euo pipefail
log() { printf '[local_slurm_down %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

PREFIX=${SLURM_LOCAL_PREFIX:-${TMPDIR:-/tmp}/slurmlocal}
STARTED="$PREFIX/started"
WAIT=${SLURM_DOWN_TIMEOUT:-20}

if [ ! -s "$STARTED" ]; then
  log "no daemons recorded in $STARTED - nothing to stop"
  exit 0
fi

alive() {  # pid: exists and is not a zombie (PID 1 of a container may never reap it)
  [ -d "/proc/$1" ] && ! grep -qE '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null
}
running() {  # name pidfile -> pid on stdout if that daemon still runs
  local pid
  pid=$(cat "$2" 2>/dev/null || true)
  [ -n "$pid" ] && alive "$pid" && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$1" ] \
    && echo "$pid"
}

# ---------------------------------------------------------------- jobs of our controller
ctld_pidfile=$(awk '$1 == "slurmctld" {print $2}' "$STARTED" | tail -n1)
if [ -n "$ctld_pidfile" ] && [ -s "$PREFIX/conf" ] && running slurmctld "$ctld_pidfile" >/dev/null
then
  export SLURM_CONF
  SLURM_CONF=$(cat "$PREFIX/conf")
  jobs=$(timeout 10 squeue -h -o '%i' -t PENDING,RUNNING,SUSPENDED,COMPLETING 2>/dev/null || true)
  if [ -n "$jobs" ]; then
    log "cancelling jobs still on the cluster: $(echo $jobs)"
    # shellcheck disable=SC2086
    timeout 10 scancel $jobs 2>/dev/null || true
    for _ in $(seq 1 $((WAIT * 2))); do
      left=$(timeout 10 squeue -h -o '%i' -t PENDING,RUNNING,SUSPENDED,COMPLETING 2>/dev/null \
        || true)
      [ -z "$left" ] && break
      sleep 0.5
    done
    [ -n "${left:-}" ] && log "jobs still listed after ${WAIT}s: $(echo $left)"
  fi
fi

# ---------------------------------------------------------------- daemons
rc=0
while read -r name pidfile; do
  [ -n "$name" ] || continue
  pid=$(cat "$pidfile" 2>/dev/null || true)
  if [ -z "$pid" ] || ! alive "$pid"; then
    log "$name: not running (pid file $pidfile)"; continue
  fi
  comm=$(cat "/proc/$pid/comm" 2>/dev/null || true)
  if [ "$comm" != "$name" ]; then
    log "$name: pid $pid is now '$comm' - stale pid file, not touching it"; continue
  fi
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 $((WAIT * 10))); do alive "$pid" || break; sleep 0.1; done
  if alive "$pid"; then
    log "$name: pid $pid ignored SIGTERM for ${WAIT}s - sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || rc=1
  fi
  log "stopped $name (pid $pid)"
done < <(tac "$STARTED")

[ $rc -eq 0 ] && rm -f "$STARTED"
exit $rc
