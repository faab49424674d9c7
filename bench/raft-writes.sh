#!/usr/bin/env bash
# raft-writes.sh — write throughput and latency of a 3-manager cluster
# through the control API, with the compiled load generator
# (examples/api_load.rs `load`: N HTTP/1.1 keep-alive connections on the API
# unix socket, one request in flight per connection, back to back; writes/s
# counts accepted writes started in the measured window; latency = request
# sent -> response body read).
#
# Runs, in this order, on one cluster: 1 client via a follower, 1 client via
# the leader, CLIENTS (default 64) via a follower, CLIENTS via the leader.
# Write: POST /configs/create with a unique name per write (201) if the API
# has it, else node label updates (GET + POST /nodes/{id}/update; sequential
# only — concurrent updates of one node conflict by design).
# Env: DURATION (measured s per run, default 10), WARMUP (s, default 1),
#      CLIENTS (default 64), THREADS (load generator's tokio threads, default 1).
# Also prints each manager's and the load generator's CPU use during each run
# (100% = one core; the machine's other load shows in the load average).
source "$(dirname "$0")/lib.sh"
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-1}
CLIENTS=${CLIENTS:-64}
THREADS=${THREADS:-1}
need_bins api_load
bench_setup

three_managers
KIND=$(write_kind m1)
L=$(leader) || die "no leader"
F=""; for m in m1 m2 m3; do [[ $m != "$L" ]] && { F=$m; break; }; done
log "3 managers up; leader $L, follower $F; write = $KIND; ${DURATION}s per run, load generator threads: $THREADS"

runs=("1 $F follower" "1 $L leader")
if [[ $KIND == configs ]]; then
  runs+=("$CLIENTS $F follower" "$CLIENTS $L leader")
else
  log "no /configs/create: only sequential runs (concurrent node updates conflict)"
fi
# The disk's sync latency now (two of these, leader's and a follower's, are in
# every write's latency; see BENCHMARKS.md).
helper fsync --dir "$TMP" --count 200 | grep -v '^RESULT' >&2
# ...and what a message between tasks, to the blocking pool and to another
# process costs here (a sequential write needs several of each).
helper floor --count 5000 | grep -v '^RESULT' >&2
# ...and the ceiling: the same message pattern with no shoal code in it
# (client -> leader -> two followers, three synced appends; api_load chain).
helper chain --dir "$TMP" --duration 3 | grep -v '^RESULT' >&2
printf '%-8s %-9s %-8s %10s %9s %9s %9s %7s  %-22s %s\n' clients target node writes/s p50-ms p99-ms max-ms errors "cpu% m1/m2/m3/gen" load-avg
for spec in "${runs[@]}"; do
  read -r c n what <<<"$spec"
  sleep 1
  declare -A c0=(); for m in m1 m2 m3; do c0[$m]=$(cpu_ticks "${PID[$m]}"); done
  t0=$EPOCHREALTIME
  out=$(helper --threads "$THREADS" load --socket "$(sock "$n")" --write "$KIND" \
    --clients "$c" --duration "$DURATION" --warmup "$WARMUP" 2>&1) || { echo "$out" >&2; die "load run failed"; }
  la=$(load_avg)
  cpu=""; for m in m1 m2 m3; do
    cpu+=$(awk -v a="$(cpu_ticks "${PID[$m]}")" -v b="${c0[$m]}" -v hz="$HZ" -v t0="$t0" -v t1="$EPOCHREALTIME" \
      'BEGIN{printf "%.0f/", (a-b)/hz/(t1-t0)*100}')
  done
  f() { result_field "$1" <<<"$out"; }
  printf '%-8s %-9s %-8s %10s %9s %9s %9s %7s  %-22s %s\n' "$c" "$what" "$n" "$(f wps)" "$(f p50_ms)" "$(f p99_ms)" \
    "$(f max_ms)" "$(f errors)" "$cpu$(f gen_cpu_pct)" "$la"
  grep '^  error' <<<"$out" | sed 's/^/     /'
  [[ $(leader) == "$L" ]] || log "warning: leadership moved during the run (now $(leader))"
done
helper fsync --dir "$TMP" --count 200 | grep -v '^RESULT' >&2
# ...and what a message between tasks, to the blocking pool and to another
# process costs here (a sequential write needs several of each).
helper floor --count 5000 | grep -v '^RESULT' >&2
# ...and the ceiling: the same message pattern with no shoal code in it
# (client -> leader -> two followers, three synced appends; api_load chain).
helper chain --dir "$TMP" --duration 3 | grep -v '^RESULT' >&2
echo "endpoint: $(result_field endpoint <<<"$out"); manager RSS after the runs: $(for m in m1 m2 m3; do printf '%s=%.0fMB ' "$m" "$(awk -v k="$(rss_kb "${PID[$m]}")" 'BEGIN{print k/1024}')"; done)"
[[ $KIND == configs ]] && echo "configs in the store: $(api "$L" GET /configs | head -n -1 | jq length)"
