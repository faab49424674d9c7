#!/usr/bin/env bash
# 50 busybox replicas through shoal's docker executor vs through Docker's own
# Swarm, on one private dockerd, side by side (issue: "shoal adds nothing
# measurable on top of container start time"; goal shoal/swarm ≤ 1.0).
#
#   bench/docker-replicas.sh [RUNS]        RUNS rounds (default 3), each:
#     A. Docker Swarm: `swarm init`, `service create --detach --replicas 50
#        local/busybox:1 sleep 1d`, time to all 50 tasks running, `service rm`,
#        wait until every container is gone, `swarm leave --force`.
#     B. shoal: `shoal init` (a fresh one-node cluster whose docker executor
#        uses the same dockerd), the same service through the shoal CLI, the
#        same timing, `service rm`, wait until every container is gone.
#   Timing: from just before the CLI's `service create` to the first poll
#   (GET /tasks on the API socket, every 20 ms plus the poll's own cost) that
#   sees all tasks running; also the first task running and, from the tasks'
#   own Status.Timestamp, when the last one became running.
#
# The dockerd is private (own data root, exec root, socket, pidfile; flags as
# .ci/run) and started with DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1, Docker's
# own switch (its integration tests use it) for Swarm to run a local image
# without asking a registry first: no registry is reachable here and shoal
# does not ask one for an image it has. SWARM_PULL=1 leaves it unset (Swarm
# then tries, and fails, one pull per task). The image is imported from
# /bin/busybox; nothing is ever pulled. No ports are published (no IPVS).
#
# Environment (plus lib.sh's SHOAL_BIN, KEEP, NICE, SHOAL_LOG):
#   REPLICAS    replicas per service (default 50)
#   DOCKER_CLI  the docker CLI (default /usr/local/bin/docker, CLI 28)
#   SWARM_PULL  1: let Swarm's agent try to pull the image for every task
#
# Everything it starts (dockerd and its containerd, containers, the swarm,
# shoal) is stopped on exit, pass or fail, by PID; its mounts are unmounted
# and the temp dir removed (KEEP=1 keeps the logs).
set -euo pipefail
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
set -e

RUNS=${1:-3}
REPLICAS=${REPLICAS:-50}
DOCKER=${DOCKER_CLI:-/usr/local/bin/docker}
SWARM_PULL=${SWARM_PULL:-0}
IMAGE=local/busybox:1
SVC=s50
POLL=0.02
DPID=""        # our dockerd
GWBRIDGE_BEFORE=0

now_ms() { date +%s%3N; }

# --- prerequisites -----------------------------------------------------------
if ! command -v dockerd >/dev/null || [[ ! -x /bin/busybox ]]; then
  [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null || die "need dockerd and /bin/busybox (docker.io, busybox-static)"
  log "installing docker.io busybox-static"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io busybox-static >/dev/null
fi
need_bins
[[ -x $DOCKER ]] || die "no docker CLI at $DOCKER (set DOCKER_CLI)"
[[ $(id -u) == 0 ]] || die "dockerd needs root"

# --- our dockerd ---------------------------------------------------------------
bench_setup
DSOCK=$TMP/docker.sock
export DOCKER_HOST=unix://$DSOCK   # shoal's docker executor finds the engine here
dk() { timeout 120 "$DOCKER" -H "unix://$DSOCK" "$@"; }
eapi() { curl -s -m 10 --unix-socket "$DSOCK" "http://docker/v1.41$1"; }

cleanup() {
  local rc=$? n p ids i f
  set +e
  trap - EXIT INT TERM
  # shoal first, so that no agent starts containers while they are removed
  for n in "${!PID[@]}"; do
    p=${PID[$n]}
    ours "$p" && kill -9 "$p" && wait "$p"
  done 2>/dev/null
  if [[ -n $DPID ]] && ours "$DPID"; then
    ids=$(dk ps -aq 2>/dev/null)
    # shellcheck disable=SC2086
    [[ -n $ids ]] && dk rm -f $ids >/dev/null 2>&1
    dk swarm leave --force >/dev/null 2>&1
    ((GWBRIDGE_BEFORE)) || dk network rm docker_gwbridge >/dev/null 2>&1
    kill -TERM "$DPID"
    for ((i = 0; i < 150; i++)); do ours "$DPID" || break; sleep 0.1; done
    ours "$DPID" && kill -9 "$DPID"
    wait "$DPID" 2>/dev/null
  fi
  if ((rc != 0)) && [[ -n $TMP ]]; then
    for f in "$TMP"/*.log; do
      [[ -f $f ]] && { log "--- tail of $f"; tail -15 "$f" >&2; }
    done
  fi
  # what dockerd left mounted under our temp dir (netns, overlays), deepest first
  awk -v t="$TMP/" 'index($2, t) == 1 {print $2}' /proc/mounts | sort -r | while read -r m; do
    umount -l "$m" 2>/dev/null
  done
  bench_cleanup
  exit "$rc"
}
trap cleanup EXIT

ip link show docker_gwbridge >/dev/null 2>&1 && GWBRIDGE_BEFORE=1
if ((SWARM_PULL)); then offline=(); else offline=(env DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1); fi
setsid "${offline[@]}" dockerd --data-root "$TMP/root" --exec-root "$TMP/exec" \
  -H "unix://$DSOCK" --pidfile "$TMP/docker.pid" \
  --bridge none --iptables=false >"$TMP/dockerd.log" 2>&1 &
DPID=$!
for ((i = 0; i < 300; i++)); do
  dk version >/dev/null 2>&1 && break
  ours "$DPID" || { tail -20 "$TMP/dockerd.log" >&2; die "dockerd exited"; }
  sleep 0.1
done
dk version >/dev/null 2>&1 || { tail -20 "$TMP/dockerd.log" >&2; die "dockerd did not answer"; }
log "dockerd $(dk version --format '{{.Server.Version}}') at $DSOCK (pid $DPID); docker CLI $(dk version --format '{{.Client.Version}}')"

# the image: /bin/busybox and its applets' links, imported (no registry)
mkdir -p "$TMP/rootfs/bin"
cp /bin/busybox "$TMP/rootfs/bin/busybox"
for a in sh sleep echo cat ls true false; do ln -s busybox "$TMP/rootfs/bin/$a"; done
tar -C "$TMP/rootfs" -c . | dk import - "$IMAGE" >/dev/null
log "image $IMAGE imported"

# --- measuring -----------------------------------------------------------------
# RFC 3339 (UTC, fractional seconds) → epoch ms, in jq
JQ_MS='def ms: capture("^(?<s>[^.Z]+)(?:\\.(?<f>[0-9]+))?Z$")
  | ((.s + "Z" | fromdate) * 1000 + (((.f // "0") + "000")[0:3] | tonumber));'

tasks_json() { # tasks_json SOCKET SERVICE -> the service's tasks meant to run
  curl -s -m 10 --unix-socket "$1" -G "http://api/v1.41/tasks" \
    --data-urlencode "filters={\"service\":{\"$2\":true},\"desired-state\":{\"running\":true}}"
}

# watch SOCKET SERVICE T0 → "FIRST_MS ALL_MS LAST_TS_MS": ms after T0 when a
# poll first saw one / all tasks running; when the last task became running
# by its own Status.Timestamp
watch() {
  local s=$1 svc=$2 t0=$3 n t first="" deadline
  deadline=$(($(now_ms) + 300000))
  while :; do
    n=$(tasks_json "$s" "$svc" | jq '[.[] | select(.Status.State == "running")] | length' 2>/dev/null || echo 0)
    t=$(now_ms)
    [[ -z $first && $n -ge 1 ]] && first=$((t - t0))
    ((n >= REPLICAS)) && break
    ((t < deadline)) || die "$svc: only $n of $REPLICAS running after 300 s"
    sleep "$POLL"
  done
  local last
  last=$(tasks_json "$s" "$svc" | jq "$JQ_MS"' [.[] | select(.Status.State == "running") | .Status.Timestamp | ms] | max')
  echo "$first $((t - t0)) $((last - t0))"
}

# CPU time (ms) the given processes have used so far
cpu_ms() { local p t=0; for p in "$@"; do t=$((t + $(cpu_ticks "$p" || echo 0))); done; echo $((t * 1000 / HZ)); }
engine_pids() { echo "$DPID" $(pgrep -P "$DPID" containerd); }

containers_gone() { # wait until the engine has no container left
  local i
  for ((i = 0; i < 1200; i++)); do
    [[ -z $(dk ps -aq) ]] && return 0
    sleep 0.1
  done
  die "containers still there after 120 s: $(dk ps -a --format '{{.Names}}' | head -5)"
}

run_swarm() { # run_swarm N
  local port t0 r
  port=$(free_port)
  dk swarm init --advertise-addr 127.0.0.1 --listen-addr "127.0.0.1:$port" >/dev/null
  for ((i = 0; i < 100; i++)); do
    [[ $(dk node ls --format '{{.Status}}' 2>/dev/null) == Ready ]] && break
    sleep 0.1
  done
  sleep 1
  log "swarm $1: load $(load_avg)"
  c0=$(cpu_ms $(engine_pids))
  t0=$(now_ms)
  dk service create --detach --name "$SVC" --replicas "$REPLICAS" "$IMAGE" sleep 1d >/dev/null 2>"$TMP/swarm-create.err"
  r=$(watch "$DSOCK" "$SVC" "$t0")
  c1=$(cpu_ms $(engine_pids))
  log "swarm $1: first ${r%% *} ms, all $REPLICAS $(cut -d' ' -f2 <<<"$r") ms (last task's own timestamp $(cut -d' ' -f3 <<<"$r") ms); CPU dockerd+containerd $((c1 - c0)) ms; load $(load_avg)"
  echo "$r $((c1 - c0)) 0" >"$TMP/result"
  dk service rm "$SVC" >/dev/null
  containers_gone
  dk swarm leave --force >/dev/null
  ((GWBRIDGE_BEFORE)) || dk network rm docker_gwbridge >/dev/null 2>&1 || true
}

run_shoal() { # run_shoal N
  local name=shoal$1 t0 r sock
  start_init "$name"
  sock=$(sock "$name")
  for ((i = 0; i < 100; i++)); do
    cli "$name" node ls --format json 2>/dev/null |
      jq -e 'length == 1 and .[0].Status.State == "ready" and (.[0].Description.Executors | index("docker"))' >/dev/null && break
    sleep 0.1
  done
  ((i < 100)) || die "shoal node not ready with the docker executor: $(tail -5 "$TMP/$name.log")"
  sleep 1
  log "shoal $1: load $(load_avg)"
  c0=$(cpu_ms $(engine_pids)) s0=$(cpu_ms "${PID[$name]}")
  t0=$(now_ms)
  cli "$name" service create --detach --name "$SVC" --replicas "$REPLICAS" "$IMAGE" sleep 1d >/dev/null
  r=$(watch "$sock" "$SVC" "$t0")
  c1=$(cpu_ms $(engine_pids)) s1=$(cpu_ms "${PID[$name]}")
  log "shoal $1: first ${r%% *} ms, all $REPLICAS $(cut -d' ' -f2 <<<"$r") ms (last task's own timestamp $(cut -d' ' -f3 <<<"$r") ms); CPU dockerd+containerd $((c1 - c0)) ms, shoal $((s1 - s0)) ms; load $(load_avg)"
  echo "$r $((c1 - c0)) $((s1 - s0))" >"$TMP/result"
  cli "$name" service rm "$SVC" >/dev/null
  containers_gone
  kill9 "$name" || true  # lib.sh helpers are written for set +e
}

sw_all=() sw_first=() sw_ts=() sw_cpu=() sh_all=() sh_first=() sh_ts=() sh_cpu=() sh_own=() loads=()
for ((run = 1; run <= RUNS; run++)); do
  l0=$(load_avg)
  run_swarm "$run"
  read -r f a t c _ <"$TMP/result"
  sw_first+=("$f") sw_all+=("$a") sw_ts+=("$t") sw_cpu+=("$c")
  run_shoal "$run"
  read -r f a t c o <"$TMP/result"
  sh_first+=("$f") sh_all+=("$a") sh_ts+=("$t") sh_cpu+=("$c") sh_own+=("$o")
  loads+=("$l0 → $(load_avg)")
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f", a / b}'; }
echo
echo "$REPLICAS × $IMAGE, dockerd $(dk version --format '{{.Server.Version}}'), $(nproc) cpu, $RUNS runs, $(date -u '+%F %H:%M UTC')"
echo "times in ms from just before \`service create\` (first running / all running / last task's own Status.Timestamp); CPU in ms during that time"
echo "| run | Swarm: first / all / last-ts | Swarm CPU (dockerd+containerd) | shoal: first / all / last-ts | shoal CPU (dockerd+containerd / shoal) | load before → after |"
echo "|---|---|---|---|---|---|"
for ((i = 0; i < RUNS; i++)); do
  echo "| $((i + 1)) | ${sw_first[i]} / ${sw_all[i]} / ${sw_ts[i]} | ${sw_cpu[i]} | ${sh_first[i]} / ${sh_all[i]} / ${sh_ts[i]} | ${sh_cpu[i]} / ${sh_own[i]} | ${loads[i]} |"
done
m_sw=$(median "${sw_all[@]}") m_sh=$(median "${sh_all[@]}")
m_swf=$(median "${sw_first[@]}") m_shf=$(median "${sh_first[@]}")
m_swt=$(median "${sw_ts[@]}") m_sht=$(median "${sh_ts[@]}")
echo "| median | $m_swf / **$m_sw** / $m_swt | $(median "${sw_cpu[@]}") | $m_shf / **$m_sh** / $m_sht | $(median "${sh_cpu[@]}") / $(median "${sh_own[@]}") | |"
echo "RESULT swarm_ms=$m_sw shoal_ms=$m_sh ratio=$(ratio "$m_sh" "$m_sw") first_ratio=$(ratio "$m_shf" "$m_swf") ts_ratio=$(ratio "$m_sht" "$m_swt")"
