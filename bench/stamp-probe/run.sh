#!/usr/bin/env bash
# stamp-probe/run.sh — where a sequential write's time goes, step by step.
#
# A diagnostic, not a benchmark: it needs a build with the timestamp probe,
# which is kept out of the code (it would only clutter the write path):
#   git apply bench/stamp-probe/probe.patch
#   cargo build --release -p shoal --bins --example api_load
#   cp target/release/{shoal,shoal-shim} /tmp/probe/; cp target/release/examples/api_load /tmp/
#   git checkout -- crates            # the probe must never be committed
#   SHOAL_BIN=/tmp/probe/shoal API_LOAD=/tmp/api_load bench/stamp-probe/run.sh
# With SHOAL_STAMP=DIR set, every process appends "nanos pid label index
# extra" lines to DIR/<pid>.stamps (buffered, written by a thread every
# 0.5 s). This starts 3 managers, runs 1 client through the leader for
# DURATION s (default 4), then prints, per step, the median time after the
# HTTP handler took each write (timeline.py). Stamp points: the handler
# (h_in, h_prop, h_out), the proposer, the log store's append and sync,
# early AppendEntries (spawned, written, answered), the replication client,
# the followers' stream handler, commit, apply, and the load generator
# (c_start, c_done). Labels L./F0./F1./C. are the leader, followers, client.
# VIA=follower: the client writes to a follower (E.), which forwards.
source "$(dirname "$0")/../lib.sh"
DURATION=${DURATION:-4}
OUT=${OUT:-$(mktemp -d /tmp/shoal-stamps.XXXXXX)}
export SHOAL_STAMP=$OUT
need_bins api_load
bench_setup
three_managers
KIND=$(write_kind m1)
L=$(leader)
echo "${PID[$L]}" >"$OUT/leader.pid"
# VIA=follower sends the writes to a follower (forwarded to the leader).
N=$L
if [[ ${VIA:-leader} == follower ]]; then
  for m in m1 m2 m3; do [[ $m != "$L" ]] && { N=$m; break; }; done
  echo "${PID[$N]}" >"$OUT/entry.pid"
fi
sleep 1
date +%s%N >"$OUT/t0"
helper load --socket "$(sock "$N")" --write "$KIND" --clients 1 --duration "$DURATION" --warmup 0.5 2>&1 | tail -1
date +%s%N >"$OUT/t1"
sleep 1
python3 "$(dirname "$0")/timeline.py" "$OUT"
log "stamps kept in $OUT"
