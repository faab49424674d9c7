#!/usr/bin/env bash
# failover.sh [RUNS=5] — leader failover time of a 3-manager cluster.
#
# Each run: find the leader, SIGKILL it, and from that instant issue writes
# through a surviving manager, one after the other, until one is accepted;
# the figure is kill -> first accepted write. The kill and the timing are done
# by the compiled helper (examples/api_load.rs `failover`: it sends the
# SIGKILL itself, then loops writes on a keep-alive connection, 1 ms pause
# after a failed attempt; times from Instant::now() just before kill(2)).
# Then the killed manager is restarted (`shoal daemon`) and the cluster must
# be healthy again (3 ready, reachable managers, one leader) before the next run.
#
# Write: POST /configs/create (unique name) if the API has it, else a node
# label update (GET + POST /nodes/{id}/update) on the surviving manager's node.
# Env: SETTLE (s between runs, default 2), see also bench/lib.sh.
source "$(dirname "$0")/lib.sh"
RUNS=${1:-5}
SETTLE=${SETTLE:-2}
need_bins api_load
bench_setup

three_managers
KIND=$(write_kind m1)
log "3 managers up; write = $KIND"

declare -a T=()
printf '%-4s %-7s %-8s %-10s %14s %9s %16s  %s\n' run killed via new-ldr kill-to-write attempts last-attempt-ms load-avg
for ((r = 1; r <= RUNS; r++)); do
  sleep "$SETTLE"
  L=$(leader) || die "no leader"
  S=""; for m in $(alive_managers); do [[ $m != "$L" ]] && { S=$m; break; }; done
  la=$(load_avg)
  out=$(helper failover --socket "$(sock "$S")" --kill-pid "${PID[$L]}" --write "$KIND" 2>&1)
  rc=$?
  reap "$L"
  ms=$(result_field kill_to_write_ms <<<"$out")
  [[ $rc == 0 && -n $ms ]] || { echo "$out" >&2; die "run $r: no write accepted"; }
  T+=("$ms")
  NL=$(leader || echo "?")
  printf '%-4s %-7s %-8s %-10s %14s %9s %16s  %s\n' "$r" "$L" "$S" "$NL" "$ms ms" \
    "$(result_field attempts <<<"$out")" "$(result_field last_attempt_ms <<<"$out")" "$la"
  grep '^  failed attempt' <<<"$out" | sed 's/^/     /'
  restart "$L"
  wait_healthy 60
done
echo "median kill -> first accepted write: $(median "${T[@]}") ms over $RUNS runs (runs: ${T[*]}); load now $(load_avg)"
