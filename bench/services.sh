#!/usr/bin/env bash
# End-to-end service benchmarks on the process executor (issue: services and tasks).
#   bench/services.sh [BIN]          (ONLY=create|ha|rss runs just parts 1–2, 3 or 4)
# 1. 1 manager + 1 worker: `service create --replicas 1000` (sleep) → all running.
# 2. Then scale +100 → all 100 new tasks assigned to a node (CLI + polling; then timed from the
#    store's timestamps, see 2b).
# 3. 3 managers + 2 workers, 50 replicas: SIGKILL a worker → all its replicas running elsewhere.
# 4. Leader RSS with 100,000 tasks in the store (100 services × 1000 replicas that can't be
#    placed: a constraint no node satisfies keeps them pending, so no processes are started).
# Starts its own daemons on loopback, kills only the PIDs it started (and their tasks' shims).
set -euo pipefail
BIN=${1:-$(dirname "$0")/../target/release/shoal}
BIN=$(realpath "$BIN")
TMP=$(mktemp -d /tmp/shoal-bench.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  for f in "$TMP"/*/tasks/*/pid "$TMP"/*/tasks/*/shim.pid; do
    [ -f "$f" ] && kill -9 -- "-$(cat "$f")" "$(cat "$f")" 2>/dev/null || true
  done
  rm -rf "$TMP"
}
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now_ms() { date +%s%3N; }
api() { curl -s --unix-socket "$TMP/$1/shoal.sock" "http://x/v1.41$2"; }
start_init() { local n=$1; local p; p=$(port); "$BIN" init --data-dir "$TMP/$n" --listen-addr 127.0.0.1:$p --hostname "$n" >"$TMP/$n.log" 2>&1 & PIDS+=($!); eval "ADDR_$n=127.0.0.1:$p"; eval "PID_$n=$!"; wait_api "$n"; }
start_join() { local n=$1 role=$2 via=$3; local p; p=$(port); local tok; tok=$("$BIN" -H "unix://$TMP/$via/shoal.sock" swarm join-token -q "$role"); local addr; addr=$(eval echo "\$ADDR_$via")
  "$BIN" join --data-dir "$TMP/$n" --listen-addr 127.0.0.1:$p --hostname "$n" --token "$tok" "$addr" >"$TMP/$n.log" 2>&1 & PIDS+=($!); eval "ADDR_$n=127.0.0.1:$p"; eval "PID_$n=$!"; wait_api "$n"; }
wait_api() { for _ in $(seq 1 200); do [ -S "$TMP/$1/shoal.sock" ] && api "$1" /_ping >/dev/null 2>&1 && return; sleep 0.05; done; echo "no API for $1"; exit 1; }
count_running() { api "$1" "/tasks?filters=$(python3 -c "import urllib.parse,json;print(urllib.parse.quote(json.dumps({'service':{'$2':True},'desired-state':{'running':True}})))")" | python3 -c 'import json,sys; t=json.load(sys.stdin); print(sum(1 for x in t if x["Status"]["State"]=="running"))'; }
count_assigned() { api "$1" "/tasks?filters=$(python3 -c "import urllib.parse,json;print(urllib.parse.quote(json.dumps({'service':{'$2':True},'desired-state':{'running':True}})))")" | python3 -c 'import json,sys; t=json.load(sys.stdin); print(sum(1 for x in t if x.get("NodeID")))'; }
echo "load before: $(cat /proc/loadavg)"

ONLY=${ONLY:-}
# --- 1 and 2 ---
if [ -z "$ONLY" ] || [ "$ONLY" = create ]; then
start_init m1; start_join w1 worker m1; sleep 1
t0=$(now_ms)
"$BIN" -H "unix://$TMP/m1/shoal.sock" service create --detach --name big --replicas 1000 --runtime process -- sleep 100000 >/dev/null
SID=$(api m1 /services/big | python3 -c 'import json,sys; print(json.load(sys.stdin)["ID"])')
while [ "$(count_running m1 "$SID")" -lt 1000 ]; do sleep 0.1; done
t1=$(now_ms); echo "create --replicas 1000 → 1000 running: $((t1 - t0)) ms"
t0=$(now_ms)
"$BIN" -H "unix://$TMP/m1/shoal.sock" service scale --detach big=1100 >/dev/null
while [ "$(count_assigned m1 "$SID")" -lt 1100 ]; do :; done
t1=$(now_ms); echo "scale +100 → 100 assigned: $((t1 - t0)) ms (includes one CLI run and polling granularity)"
# 2b. The same scale, timed inside the manager: a service pinned to the worker, whose agent is
#     SIGSTOPped for the measurement so the new tasks stay `assigned` (their Status.Timestamp is
#     then the scheduler's assignment time); one `POST /services/{id}/update` with curl; figure =
#     max(assignment Timestamp of the 100 new tasks) − the service's UpdatedAt (set by the API
#     handler when the update arrives). The worker is resumed well within its heartbeat grace.
"$BIN" -H "unix://$TMP/m1/shoal.sock" service create --name fine --replicas 1 --constraint node.role==worker --runtime process -- sleep 100002 >/dev/null
FID=$(api m1 /services/fine | python3 -c 'import json,sys; print(json.load(sys.stdin)["ID"])')
fine_runs=()
for run in 1 2 3 4 5; do
  want=$((1 + 100 * run))
  body=$(api m1 "/services/$FID" | python3 -c "import json,sys; s=json.load(sys.stdin); s['Spec']['Mode']['Replicated']['Replicas']=$want; print(s['Version']['Index']); print(json.dumps(s['Spec']))")
  ver=$(echo "$body" | head -1)
  kill -STOP "$PID_w1"
  curl -s --unix-socket "$TMP/m1/shoal.sock" -H 'Content-Type: application/json' -X POST \
    --data "$(echo "$body" | tail -1)" "http://x/v1.41/services/$FID/update?version=$ver" >/dev/null
  while [ "$(count_assigned m1 "$FID")" -lt "$want" ]; do sleep 0.02; done
  res=$( (api m1 "/services/$FID"; echo; api m1 "/tasks?filters=$(python3 -c "import urllib.parse,json;print(urllib.parse.quote(json.dumps({'service':{'$FID':True}})))")") | python3 -c '
import json, sys, datetime
svc, tasks = [json.loads(l) for l in sys.stdin.read().strip().split("\n")]
def ns(t):  # RFC 3339 with nanoseconds → ns since the epoch
    d, frac = (t.rstrip("Z").split(".") + ["0"])[:2]
    s = datetime.datetime.fromisoformat(d).replace(tzinfo=datetime.timezone.utc).timestamp()
    return int(s) * 10**9 + int(frac.ljust(9, "0")[:9])
cut = ns(svc["UpdatedAt"])
new = [t for t in tasks if ns(t["CreatedAt"]) >= cut]
states = sorted(set(t["Status"]["State"] for t in new))
print(len(new), "%.1f" % ((max(ns(t["Status"]["Timestamp"]) for t in new) - cut) / 1e6), ",".join(states))')
  kill -CONT "$PID_w1"
  set -- $res
  echo "run $run: scale $((want - 100)) → $want: $1 new tasks ($3) assigned $2 ms after the update request"
  fine_runs+=("$2")
  while [ "$(count_running m1 "$FID")" -lt "$want" ]; do sleep 0.2; done
done
echo "scale +100 → 100 assigned (store timestamps), median of 5: $(printf '%s\n' "${fine_runs[@]}" | sort -n | sed -n 3p) ms"
"$BIN" -H "unix://$TMP/m1/shoal.sock" service rm fine >/dev/null
"$BIN" -H "unix://$TMP/m1/shoal.sock" service rm big >/dev/null
for _ in $(seq 1 600); do [ "$(pgrep -c -f '^sleep 10000[02]$' || true)" = 0 ] && break; sleep 0.2; done
kill -9 "$PID_m1" "$PID_w1"; sleep 0.5
echo "load: $(cat /proc/loadavg)"
fi

# --- 3: worker SIGKILL → its replicas running elsewhere (3 managers + 2 workers) ---
if [ -z "$ONLY" ] || [ "$ONLY" = ha ]; then
rm -rf "$TMP"/m1 "$TMP"/w1
start_init m1; start_join m2 manager m1; start_join m3 manager m1; start_join w1 worker m1; start_join w2 worker m1; sleep 2
"$BIN" -H "unix://$TMP/m1/shoal.sock" service create --name fifty --replicas 50 --runtime process -- sleep 100001 >/dev/null
SID=$(api m1 /services/fifty | python3 -c 'import json,sys; print(json.load(sys.stdin)["ID"])')
W1=$(api w1 /info | python3 -c 'import json,sys; print(json.load(sys.stdin)["Swarm"]["NodeID"])')
runs=()
for run in 1 2 3 4 5; do
  on_w1=$(api m1 "/tasks?filters=$(python3 -c "import urllib.parse,json;print(urllib.parse.quote(json.dumps({'service':{'$SID':True},'desired-state':{'running':True}})))")" | python3 -c "import json,sys; print(sum(1 for x in json.load(sys.stdin) if x.get('NodeID')=='$W1'))")
  t0=$(now_ms); kill -9 "$PID_w1"
  while :; do
    ok=$(api m2 "/tasks?filters=$(python3 -c "import urllib.parse,json;print(urllib.parse.quote(json.dumps({'service':{'$SID':True},'desired-state':{'running':True}})))")" | python3 -c "import json,sys; t=json.load(sys.stdin); print(1 if sum(1 for x in t if x['Status']['State']=='running' and x.get('NodeID')!='$W1')==50 else 0)")
    [ "$ok" = 1 ] && break
  done
  t1=$(now_ms); runs+=($((t1 - t0))); echo "run $run: $on_w1 tasks on the killed worker → all 50 running elsewhere in $((t1 - t0)) ms"
  "$BIN" daemon --data-dir "$TMP/w1" >>"$TMP/w1.log" 2>&1 & PIDS+=($!); PID_w1=$!; wait_api w1
  # spread the replicas over all nodes again (w1 included) for the next run
  sleep 1
  "$BIN" -H "unix://$TMP/m1/shoal.sock" service scale --detach fifty=0 >/dev/null
  while [ "$(count_running m1 "$SID")" -gt 0 ]; do sleep 0.2; done
  "$BIN" -H "unix://$TMP/m1/shoal.sock" service scale --detach fifty=50 >/dev/null
  while [ "$(count_running m1 "$SID")" -lt 50 ]; do sleep 0.2; done
done
echo "worker SIGKILL → replicas elsewhere, median of ${#runs[@]}: $(printf '%s\n' "${runs[@]}" | sort -n | sed -n "$(( (${#runs[@]} + 1) / 2 ))p") ms"
"$BIN" -H "unix://$TMP/m1/shoal.sock" service rm fifty >/dev/null; sleep 3
for n in m1 m2 m3 w1 w2; do kill -9 "$(eval echo "\$PID_$n")" 2>/dev/null || true; done; sleep 0.5
echo "load: $(cat /proc/loadavg)"
fi

# --- 4: leader RSS with 100,000 tasks in the store ---
if [ -z "$ONLY" ] || [ "$ONLY" = rss ]; then
rm -rf "$TMP"/m1 "$TMP"/m2 "$TMP"/m3 "$TMP"/w1 "$TMP"/w2
start_init m1
for i in $(seq 1 100); do
  "$BIN" -H "unix://$TMP/m1/shoal.sock" service create --detach --name "p$i" --replicas 1000 --constraint node.labels.never==1 --runtime process -- sleep 1 >/dev/null
done
for _ in $(seq 1 600); do
  n=$(api m1 "/tasks?filters=$(python3 -c "import urllib.parse,json;print(urllib.parse.quote(json.dumps({'desired-state':{'running':True}})))")" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
  [ "$n" -ge 100000 ] && break; sleep 1
done
sleep 5
echo "tasks in the store: $n; leader $(grep VmRSS /proc/$PID_m1/status) (peak $(grep VmHWM /proc/$PID_m1/status | tr -s ' \t' ' '))"
echo "load: $(cat /proc/loadavg)"
fi
