#!/usr/bin/env bash
# raft-writes-paired.sh BIN_A BIN_B — compares two shoal builds' write
# throughput with the host's drift cancelled out: both 3-manager clusters run
# side by side for the whole comparison (the idle one only heartbeats), and
# short load runs alternate between them, A B B A A B B A …, so a slow or
# fast minute of this shared machine lands on both builds alike.
#
# Env: ROUNDS (pairs of runs per target, default 10), DURATION (s per run,
#      default 3), CLIENTS (default 1), TARGETS ("leader follower", default
#      both), WARMUP (s, default 0.5), plus lib.sh's (NICE, KEEP, API_LOAD).
# Prints every run's writes/s, then per target: each build's median and
# mean, and the median of the per-pair ratios B/A (the figure to trust).
source "$(dirname "$0")/lib.sh"
[[ $# -eq 2 ]] || die "usage: $0 BIN_A BIN_B"
BIN_A=$1 BIN_B=$2
ROUNDS=${ROUNDS:-10}
DURATION=${DURATION:-3}
CLIENTS=${CLIENTS:-1}
TARGETS=${TARGETS:-leader follower}
WARMUP=${WARMUP:-0.5}
for b in "$BIN_A" "$BIN_B"; do [[ -x $b ]] || die "no shoal binary at $b"; done
B=$BIN_A need_bins api_load
bench_setup

declare -A BIN=([a]=$BIN_A [b]=$BIN_B)
for c in a b; do
  B=${BIN[$c]}
  start_init "${c}1"
  start_join "${c}2" manager "${c}1"
  start_join "${c}3" manager "${c}1"
done

# The leader and a follower of cluster $1, as its first manager sees them.
declare -A LEAD=() FOLL=()
for c in a b; do
  B=${BIN[$c]}
  for ((i = 0; i < 600; i++)); do
    j=$(nodes_json "${c}1") &&
      jq -e 'length == 3 and (map(select(.Status.State == "ready")) | length == 3)
             and (map(select(.ManagerStatus.Leader == true)) | length == 1)' <<<"$j" >/dev/null && break
    sleep 0.1
  done
  LEAD[$c]=$(jq -r '.[] | select(.ManagerStatus.Leader == true) | .Description.Hostname' <<<"$j")
  [[ -n ${LEAD[$c]} ]] || die "cluster $c has no leader"
  for m in "${c}1" "${c}2" "${c}3"; do [[ $m != "${LEAD[$c]}" ]] && { FOLL[$c]=$m; break; }; done
done
KIND=$(B=$BIN_A write_kind a1)
log "clusters up: a (${LEAD[a]} leads) = $BIN_A; b (${LEAD[b]} leads) = $BIN_B; write = $KIND; $CLIENTS client(s), ${DURATION}s runs, $ROUNDS rounds"

declare -A W=()   # "$target $c $round" -> writes/s
run() { # run TARGET CLUSTER ROUND
  local t=$1 c=$2 r=$3 n out
  if [[ $t == leader ]]; then n=${LEAD[$c]}; else n=${FOLL[$c]}; fi
  out=$(helper load --socket "$(sock "$n")" --write "$KIND" --clients "$CLIENTS" \
    --duration "$DURATION" --warmup "$WARMUP" 2>&1) || { echo "$out" >&2; die "load run failed"; }
  W["$t $c $r"]=$(result_field wps <<<"$out")
  printf '%-8s round %2d  %s  %8s writes/s  p50 %s ms  (load %s)\n' "$t" "$r" "$c" "${W["$t $c $r"]}" \
    "$(result_field p50_ms <<<"$out")" "$(load_avg)"
}
for ((r = 1; r <= ROUNDS; r++)); do
  for t in $TARGETS; do
    if ((r % 2)); then run "$t" a "$r"; run "$t" b "$r"; else run "$t" b "$r"; run "$t" a "$r"; fi
  done
done

for t in $TARGETS; do
  for c in a b; do
    for ((r = 1; r <= ROUNDS; r++)); do echo "${W["$t $c $r"]}"; done | sort -n |
      awk -v t="$t" -v c="$c" -v bin="${BIN[$c]}" '{v[NR] = $1; s += $1}
        END { m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
              printf "%-8s %s median %.0f mean %.0f  (%s)\n", t, c, m, s / NR, bin }'
  done
  for ((r = 1; r <= ROUNDS; r++)); do
    awk -v a="${W["$t a $r"]}" -v b="${W["$t b $r"]}" 'BEGIN { if (a > 0) printf "%.4f\n", b / a }'
  done | sort -n | awk -v t="$t" '{v[NR] = $1} END {
    m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
    printf "%-8s b/a median ratio %.3f (range %.3f-%.3f over %d pairs)\n", t, m, v[1], v[NR], NR }'
done
