#!/usr/bin/env bash
# write-timeline.sh — one long write run on a 3-manager cluster, with the
# accepted writes per interval, to see dips that a short run's average hides
# (snapshots, segment roll-overs, a noisy host) and line them up with the
# managers' logs ("snapshot built" lines give each snapshot's size, encoding
# and writing time, and the wall-clock time it ended).
#
# Env: DURATION (measured s, default 40), CLIENTS (default 64), TARGET
#      (leader | follower, default leader), STEP (interval in ms, default
#      250), TIMELINE=1 (also print every interval), SHOAL_SNAPSHOT_LOGS (passed
#      to the daemons), plus lib.sh's (SHOAL_BIN, API_LOAD, NICE, KEEP).
# Prints the run's RESULT line, a summary of the intervals (mean writes/s,
# intervals under half the mean, the worst 1 s and 3 s windows) and the
# snapshots each manager built.
source "$(dirname "$0")/lib.sh"
DURATION=${DURATION:-40}
CLIENTS=${CLIENTS:-64}
TARGET=${TARGET:-leader}
STEP=${STEP:-250}
need_bins api_load
bench_setup

three_managers
L=$(leader) || die "no leader"
N=$L
if [[ $TARGET == follower ]]; then
  for m in m1 m2 m3; do [[ $m != "$L" ]] && { N=$m; break; }; done
fi
log "leader $L; writing through $N ($TARGET): $CLIENTS clients, ${DURATION}s, intervals of ${STEP} ms; load $(load_avg)"
out=$(helper load --socket "$(sock "$N")" --write configs --clients "$CLIENTS" --duration "$DURATION" \
  --warmup 1 --timeline-ms "$STEP" 2>&1) || { echo "$out" >&2; die "load run failed"; }
grep '^RESULT' <<<"$out"
# The last interval is cut short by the end of the run: left out.
grep '^TIMELINE' <<<"$out" | head -n -1 | awk -v step="$STEP" '
  { t[NR] = $2; v[NR] = $3; sum += $3 }
  function worst(k,   i, j, s, m, at) {
    m = -1
    for (i = 1; i + k - 1 <= NR; i++) {
      s = 0; for (j = i; j < i + k; j++) s += v[j]
      if (m < 0 || s / k < m) { m = s / k; at = t[i] }
    }
    return sprintf("%.0f (from %s)", m, at)
  }
  END {
    if (NR == 0) { print "no intervals"; exit }
    mean = sum / NR
    for (i = 1; i <= NR; i++) if (v[i] < mean / 2) low++
    k1 = int(1000 / step); k3 = int(3000 / step)
    printf "intervals: %d of %d ms, mean %.0f writes/s, %d under half the mean\n", NR, step, mean, low
    printf "worst 1 s: %s writes/s; worst 3 s: %s writes/s\n", worst(k1 < 1 ? 1 : k1), worst(k3 < 1 ? 1 : k3)
  }'
[[ ${TIMELINE:-0} == 1 ]] && grep '^TIMELINE' <<<"$out" | cut -d' ' -f2-
for m in m1 m2 m3; do
  plain_log "$m" | grep 'snapshot built' | sed -E "s/^([^ ]+) .*snapshot built/$m \1/"
done
echo "load average after: $(load_avg)"
