#!/usr/bin/env bash
# worker-down.sh [RUNS=5] — time from SIGKILL of a worker to the manager
# showing it `down`, with 1 manager + 1 worker and the default heartbeat.
#
# The compiled helper (examples/api_load.rs `wait-state`) sends the SIGKILL
# itself and polls GET /nodes/{id} on the manager every 20 ms (keep-alive
# connection) until Status.State is "down"; the figure is kill -> completion
# of the first poll that shows it. The worker is then restarted
# (`shoal daemon`) and must be ready again before the next run.
#
# CUT=1: cut the worker's network cable instead (a partition: the worker
# keeps running; every daemon on a host of its own, NETNS=1 in lib.sh), and
# restore it after each run.
# Env: SETTLE (s between runs, default 2), INTERVAL_MS (poll period, default 20), CUT.
source "$(dirname "$0")/lib.sh"
RUNS=${1:-5}
SETTLE=${SETTLE:-2}
INTERVAL_MS=${INTERVAL_MS:-20}
need_bins api_load
bench_setup

start_init m1
start_join w1 worker m1
wait_healthy 60
WID=$(node_id w1)
HB=$(api m1 GET /swarm | head -n -1 | jq -r '.Spec.Dispatcher.HeartbeatPeriod // "unset (default)"')
log "1 manager + 1 worker up; worker id $WID; heartbeat period (ns, cluster spec): $HB"

declare -a T=()
if ((CUT)); then what=cut; else what=kill; fi
printf '%-4s %14s %7s  %s\n' run "$what-to-down" polls load-avg
for ((r = 1; r <= RUNS; r++)); do
  sleep "$SETTLE"
  la=$(load_avg)
  if ((CUT)); then fault=(--cut-cmd "$(cable_cmd w1 down)"); else fault=(--kill-pid "${PID[w1]}"); fi
  out=$(helper wait-state --socket "$(sock m1)" --node "$WID" --state down \
    "${fault[@]}" --interval-ms "$INTERVAL_MS" 2>&1)
  rc=$?
  ((CUT)) || reap w1
  ms=$(result_field kill_to_state_ms <<<"$out")
  [[ $rc == 0 && -n $ms ]] || { echo "$out" >&2; die "run $r: worker not down"; }
  T+=("$ms")
  printf '%-4s %14s %7s  %s\n' "$r" "$ms ms" "$(result_field polls <<<"$out")" "$la"
  if ((CUT)); then cable w1 up; else restart w1; fi
  wait_healthy 60
done
echo "median $what -> down: $(median "${T[@]}") ms over $RUNS runs (runs: ${T[*]}); poll every ${INTERVAL_MS} ms; load now $(load_avg)"
