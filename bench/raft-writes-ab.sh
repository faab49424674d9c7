#!/usr/bin/env bash
# raft-writes-ab.sh BIN... — runs bench/raft-writes.sh once per shoal binary,
# in the order given (alternate them: A B A B), and measures the CPU each
# manager and the load generator use per write in the 64-client leader run
# (`perf stat -e task-clock`, 7 s from 3.5 s after that run starts).
# Env: as raft-writes.sh (NICE=-10 recommended on a shared machine), plus
#      OUT (directory for the outputs, default: a new temp dir) and
#      PERF_RECORD=1 (also `perf record -g` all four processes for 6 s).
# Needs perf. Prints each run's rows, then "cpu_us_per_write=TOTAL (m1/m2/m3/gen)".
set -u -o pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/raft-writes-ab.XXXXXX")}
command -v perf >/dev/null || { echo "perf is needed" >&2; exit 1; }
i=0
for bin in "$@"; do
  i=$((i + 1)); d=$OUT/$i-$(basename "$bin"); mkdir -p "$d"
  KEEP=1 SHOAL_BIN=$bin "$HERE/raft-writes.sh" >"$d/bench.out" 2>"$d/bench.err" &
  bench=$!
  # Wait for the third result row (64 clients via a follower): the fourth run starts next.
  while kill -0 "$bench" 2>/dev/null && (($(grep -cE '^(1|64) ' "$d/bench.out") < 3)); do sleep 0.2; done
  sleep 3.5
  tmp=$(sed -n 's/.*temp dir \([^;]*\);.*/\1/p' "$d/bench.err" | head -1)
  pids=(); for m in m1 m2 m3; do pids+=("$(pgrep -f -- "--data-dir $tmp/$m " | head -1)"); done
  pids+=("$(pgrep -f -- "api_load.*--clients" | head -1)")
  j=0; for p in "${pids[@]}"; do j=$((j + 1))
    [[ -n $p ]] && perf stat -x, -e task-clock -p "$p" -o "$d/stat$j.csv" -- sleep 7 &
  done
  if [[ ${PERF_RECORD:-0} == 1 ]]; then
    perf record -F 997 -g -p "$(IFS=,; echo "${pids[*]}")" -o "$d/perf.data" -- sleep 6 2>/dev/null &
  fi
  wait "$bench"; wait
  [[ -n $tmp && -d $tmp ]] && rm -rf "$tmp"
  echo "== $i $bin ($(grep fsync "$d/bench.err" | head -1 | sed 's/.*: //'))"
  grep -E '^(clients|1|64) ' "$d/bench.out" || { tail -3 "$d/bench.err"; continue; }
  wps=$(grep -E '^64 +leader' "$d/bench.out" | awk '{print $4}')
  awk -F, -v wps="$wps" '$3 == "task-clock" { ms[++n] = $1 } END {
    t = 0; s = ""; for (k = 1; k <= n; k++) { us = ms[k] * 1000 / (wps * 7); t += us; s = s (k > 1 ? "/" : "") sprintf("%.0f", us) }
    printf "cpu_us_per_write=%.0f (m1/m2/m3/gen %s)\n", t, s }' "$d"/stat1.csv "$d"/stat2.csv "$d"/stat3.csv "$d"/stat4.csv
done
echo "outputs in $OUT"
