#!/usr/bin/env bash
# catch-up.sh — a manager that was down during a burst of concurrent writes
# comes back: how long until it serves everything, and whether the cluster
# kept its leader meanwhile.
#
# 3 managers; SIGKILL a follower; CLIENTS (default 64) write configs through
# the leader for DURATION s (default 20; entries then hold dozens of writes
# each, and the leader compacts its log, so the follower needs a snapshot);
# restart the follower with `shoal daemon`; poll its GET /configs until it
# has every config. Prints the time from the restart, and every leadership
# change and election gate line the managers logged after the kill.
# Env: DURATION, CLIENTS, RUNS (default 1), plus lib.sh's (SHOAL_BIN,
# API_LOAD, NICE, KEEP).
source "$(dirname "$0")/lib.sh"
DURATION=${DURATION:-20}
CLIENTS=${CLIENTS:-64}
RUNS=${RUNS:-1}
need_bins api_load

count_configs() { api "$1" GET /configs 2>/dev/null | head -n -1 | jq length 2>/dev/null; }

run() {
  bench_setup
  three_managers
  local L F m n c t0 dt
  L=$(leader) || die "no leader"
  for m in m1 m2 m3; do [[ $m != "$L" ]] && F=$m; done
  log "leader $L; SIGKILL follower $F; $CLIENTS clients write for ${DURATION}s"
  kill9 "$F"
  local mark; mark=$(date -u +%FT%T)
  helper load --socket "$(sock "$L")" --write configs --clients "$CLIENTS" --duration "$DURATION" --warmup 0 |
    grep '^RESULT'
  n=$(count_configs "$L")
  t0=$EPOCHREALTIME
  restart "$F"
  for ((i = 0; i < 1200; i++)); do
    c=$(count_configs "$F")
    [[ $c == "$n" ]] && break
    sleep 0.1
  done
  dt=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.2f", b-a}')
  [[ $c == "$n" ]] || die "$F has $c of $n configs ${dt}s after its restart"
  echo "RESULT configs=$n caught_up_s=$dt"
  for m in m1 m2 m3; do
    plain_log "$m" |
      awk -v since="$mark" '$1 >= since' |
      grep -E 'became leader|lost leadership|standing for election' |
      sed -E "s/^([^ ]+) +INFO +[^ ]+ /$m \1 /" | cut -c1-150
  done
  bench_cleanup
  NAMES=() PID=() ADDR=() ROLE=()
}

for ((r = 1; r <= RUNS; r++)); do run; done
