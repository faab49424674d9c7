# shellcheck shell=bash
# Shared helpers for the cluster benchmarks in bench/ (sourced, not run).
#
# Every daemon runs on loopback with its own data dir, port and API socket
# under one temp dir. Only the PIDs started here are ever signalled, also on
# exit or ctrl-c (trap), and the temp dir is removed afterwards (KEEP=1 keeps
# it, with the daemons' logs).
#
# Environment:
#   SHOAL_BIN   the shoal binary (default: $CARGO_TARGET_DIR or ./target, release)
#   API_LOAD    the api_load example binary (same default directory)
#   SHOAL_LOG   the daemons' log filter (default: info,openraft=off)
#   KEEP=1      keep the temp dir (logs, data) after the run
#   NICE=N      run the daemons and the helper at `nice -n N` (e.g. -10 on a
#               shared machine, as root, to keep other jobs from skewing figures)
#   NETNS=1     run every daemon on a host of its own: a network namespace
#               (10.202.0.N, port 2377) cabled by a veth pair to a bridge in a
#               "switch" namespace made here (root only; the root namespace is
#               untouched); `cable NAME down|up` cuts and restores a host's
#               cable (a two-way partition). All are deleted on exit.
#   CUT=1       (scripts that offer it) cut a network cable instead of a
#               SIGKILL/SIGSTOP; implies NETNS=1

set -u -o pipefail
export LC_ALL=C

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
TGT=${CARGO_TARGET_DIR:-$REPO/target}
B=${SHOAL_BIN:-$TGT/release/shoal}
API_LOAD=${API_LOAD:-$TGT/release/examples/api_load}
export SHOAL_LOG=${SHOAL_LOG:-info,openraft=off}
KEEP=${KEEP:-0}
NICE=${NICE:-0}
CUT=${CUT:-0}               # scripts that cut a cable instead of killing (CUT=1) need hosts
NETNS=${NETNS:-$CUT}

declare -A PID=()   # node name -> PID of its daemon (only ones started here)
declare -A ADDR=()  # node name -> node-to-node address
declare -A ROLE=()  # node name -> manager | worker
declare -A HOSTNS=()  # node name -> its network namespace (NETNS=1)
declare -A PORTNO=()  # node name -> its host number on the switch (NETNS=1)
NSPFX=""              # namespace name prefix (NETNS=1)
NAMES=()            # start order
TMP=""

log() { printf '[%s] %s\n' "$(date +%T.%3N)" "$*" >&2; }
die() { log "FATAL: $*"; exit 1; }
load_avg() { cut -d' ' -f1-3 /proc/loadavg; }

need_bins() {
  [[ -x $B ]] || die "no shoal binary at $B (build: cargo build --release -p shoal, or set SHOAL_BIN)"
  if [[ ${1:-} == api_load ]]; then
    [[ -x $API_LOAD ]] || die "no api_load at $API_LOAD (build: cargo build --release -p shoal --example api_load, or set API_LOAD)"
  fi
  command -v curl >/dev/null || die "curl is needed"
  command -v jq >/dev/null || die "jq is needed"
}

bench_setup() {
  TMP=$(mktemp -d "${TMPDIR:-/tmp}/shoal-bench.XXXXXX") || die "mktemp"
  trap bench_cleanup EXIT
  trap 'log "interrupted"; exit 130' INT TERM
  log "temp dir $TMP; shoal $B; host $(nproc) cpu, load $(load_avg); nice $NICE"
}

# Is $1 a live process that we started (a child of this script whose command
# line names our temp dir, or not yet exec'd)?
ours() {
  local p=$1 s pp
  [[ -n $p && -r /proc/$p/stat ]] || return 1
  s=$(awk '{print $3}' "/proc/$p/stat" 2>/dev/null) || return 1
  [[ $s != Z && $s != X ]] || return 1
  pp=$(awk '/^PPid:/{print $2}' "/proc/$p/status" 2>/dev/null)
  [[ $pp == "$$" ]] || return 1
  tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -qF -- "$TMP/" && return 0
  [[ $(readlink "/proc/$p/exe" 2>/dev/null) != "$(readlink -f "$B")" ]]  # forked, exec pending
}

bench_cleanup() {
  trap - EXIT INT TERM
  local n p
  {
    for n in "${!PID[@]}"; do
      p=${PID[$n]}
      ours "$p" && kill -9 "$p"
    done
    for n in "${!PID[@]}"; do wait "${PID[$n]}"; done
  } 2>/dev/null
  if [[ -n $NSPFX ]]; then
    for n in "${!HOSTNS[@]}"; do ip netns del "${HOSTNS[$n]}" 2>/dev/null; done
    ip netns del "${NSPFX}s" 2>/dev/null
  fi
  if [[ -n $TMP && -d $TMP ]]; then
    if ((KEEP)); then log "kept $TMP"; else rm -rf "$TMP"; fi
  fi
}

new_addr() { # new_addr NAME : sets ADDR[NAME] (and makes its host, with NETNS=1)
  local n=$1 i ns
  if ! ((NETNS)); then
    ADDR[$n]=127.0.0.1:$(free_port)
    return
  fi
  if [[ -z $NSPFX ]]; then
    NSPFX=sb$$
    { ip netns add "${NSPFX}s" && ip -n "${NSPFX}s" link add br0 type bridge &&
      ip -n "${NSPFX}s" link set br0 up; } || die "cannot make the switch namespace (NETNS=1 needs root and ip)"
  fi
  i=$((${#HOSTNS[@]} + 1)); ns=${NSPFX}h$i
  HOSTNS[$n]=$ns; PORTNO[$n]=$i
  { ip netns add "$ns" &&
    ip link add "v${NSPFX}h$i" netns "${NSPFX}s" type veth peer name eth0 netns "$ns" &&
    ip -n "${NSPFX}s" link set "v${NSPFX}h$i" master br0 up &&
    ip -n "$ns" addr add "10.202.0.$i/24" dev eth0 &&
    ip -n "$ns" link set eth0 up && ip -n "$ns" link set lo up; } || die "cannot make host $ns"
  ADDR[$n]=10.202.0.$i:2377
}

cable_cmd() { echo "ip -n ${NSPFX}s link set v${NSPFX}h${PORTNO[$1]} $2"; }  # cable_cmd NAME down|up
cable() { $(cable_cmd "$1" "$2") || die "cable $1 $2"; }  # cable NAME down|up (NETNS=1)

free_port() {
  local p i
  for ((i = 0; i < 100; i++)); do
    p=$((20000 + RANDOM % 30000))
    # nothing listening there
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return 0; fi
  done
  die "no free port"
}

sock() { echo "$TMP/$1/shoal.sock"; }
cli() { local n=$1; shift; timeout 10 "$B" -H "unix://$(sock "$n")" "$@"; }
api() { # api NAME METHOD PATH [BODY] -> body on stdout; HTTP status in the last line
  local n=$1 m=$2 p=$3 d=${4:-}
  if [[ -n $d ]]; then
    curl -s -m 10 --unix-socket "$(sock "$n")" -X "$m" -H 'Content-Type: application/json' \
      -d "$d" -w '\n%{http_code}' "http://shoal/v1.41$p"
  else
    curl -s -m 10 --unix-socket "$(sock "$n")" -X "$m" -w '\n%{http_code}' "http://shoal/v1.41$p"
  fi
}

spawn() { # spawn NAME ARGS... : start a daemon, record its PID
  local n=$1; shift
  echo "=== $(date +%T.%3N) shoal $*" >>"$TMP/$n.log"
  if [[ -n ${HOSTNS[$n]:-} ]]; then
    # nice and `ip netns exec` exec the daemon: $! is its PID.
    nice -n "$NICE" ip netns exec "${HOSTNS[$n]}" "$B" "$@" >>"$TMP/$n.log" 2>&1 &
  else
    nice -n "$NICE" "$B" "$@" >>"$TMP/$n.log" 2>&1 &
  fi
  PID[$n]=$!
}

wait_api() { # wait_api NAME [TIMEOUT_S]
  local n=$1 t=${2:-30} i
  for ((i = 0; i < t * 20; i++)); do
    # (checked twice: while nice execs the daemon, /proc briefly shows neither)
    ours "${PID[$n]}" || { sleep 0.1; ours "${PID[$n]}"; } || { tail -20 "$TMP/$n.log" >&2; die "$n exited"; }
    cli "$n" info --format json >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  tail -20 "$TMP/$n.log" >&2
  die "$n's API did not answer within ${t}s"
}

start_init() { # start_init NAME [extra init flags]
  local n=$1; shift
  new_addr "$n"; ROLE[$n]=manager; NAMES+=("$n")
  spawn "$n" init --data-dir "$TMP/$n" --listen-addr "${ADDR[$n]}" --hostname "$n" "$@"
  wait_api "$n"
}

start_join() { # start_join NAME manager|worker VIA
  local n=$1 role=$2 via=$3 tok
  tok=$(cli "$via" swarm join-token -q "$role") || die "join-token from $via"
  new_addr "$n"; ROLE[$n]=$role; NAMES+=("$n")
  spawn "$n" join --data-dir "$TMP/$n" --listen-addr "${ADDR[$n]}" --hostname "$n" --token "$tok" "${ADDR[$via]}"
  wait_api "$n"
}

three_managers() { # three_managers : m1 (init), m2 and m3 join as managers; all healthy
  start_init m1
  start_join m2 manager m1
  start_join m3 manager m1
  wait_healthy 60
}

restart() { # restart NAME : `shoal daemon` on its data dir
  local n=$1
  spawn "$n" daemon --data-dir "$TMP/$n"
  wait_api "$n"
}

kill9() { # kill9 NAME : SIGKILL and reap
  local n=$1 p=${PID[$1]}
  ours "$p" && kill -9 "$p" 2>/dev/null
  wait "$p" 2>/dev/null
  return 0
}

reap() { wait "${PID[$1]}" 2>/dev/null; return 0; }

plain_log() { sed 's/\x1b\[[0-9;]*m//g' "$TMP/$1.log"; }  # plain_log NAME : its log without colours

alive_managers() {
  local n
  for n in "${NAMES[@]}"; do
    [[ ${ROLE[$n]} == manager ]] && ours "${PID[$n]}" && echo "$n"
  done
}

nodes_json() { # nodes_json VIA -> GET /nodes
  cli "$1" node ls --format json 2>/dev/null
}

leader() { # the leader's host name, as the live managers see it
  local m j l
  for m in $(alive_managers); do
    j=$(nodes_json "$m") || continue
    l=$(jq -r '.[] | select(.ManagerStatus.Leader == true) | .Description.Hostname' <<<"$j" 2>/dev/null)
    [[ -n $l ]] && { echo "$l"; return 0; }
  done
  return 1
}

node_id() { # node_id NAME -> its node ID (from its own /info)
  cli "$1" info --format json | jq -r .Swarm.NodeID
}

healthy() { # every started node ready, every manager reachable, one leader — on every live manager
  local want=${#NAMES[@]} m j
  for m in $(alive_managers); do
    j=$(nodes_json "$m") || return 1
    jq -e --argjson n "$want" '
      (length == $n)
      and (map(select(.Status.State == "ready")) | length == $n)
      and (map(select(.ManagerStatus != null)) | all(.ManagerStatus.Reachability == "reachable"))
      and (map(select(.ManagerStatus.Leader == true)) | length == 1)' <<<"$j" >/dev/null || return 1
  done
}

wait_healthy() { # wait_healthy [TIMEOUT_S]
  local t=${1:-60} i
  for ((i = 0; i < t * 10; i++)); do
    healthy && return 0
    sleep 0.1
  done
  for m in $(alive_managers); do log "$m sees: $(nodes_json "$m" | jq -c '[.[] | [.Description.Hostname, .Status.State, .ManagerStatus.Leader, .ManagerStatus.Reachability]]')"; done
  die "cluster not healthy within ${t}s"
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null; }  # utime+stime, clock ticks
HZ=$(getconf CLK_TCK)

rss_kb() { awk '/^VmRSS:/{print $2}' "/proc/$1/status" 2>/dev/null; }

median() { # median of the numbers given as arguments
  printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END{if(NR==0){print "n/a"; exit} if(NR%2) print a[(NR+1)/2]; else printf "%.1f\n", (a[NR/2]+a[NR/2+1])/2}'
}

helper() { nice -n "$NICE" "$API_LOAD" "$@"; }  # the compiled helper (examples/api_load.rs)

result_field() { # result_field KEY <<< "...RESULT k=v ..."
  grep '^RESULT ' | tail -1 | tr ' ' '\n' | sed -n "s/^$1=//p"
}

# Which write the benchmarks use: configs/create if the API has it, else a node label update.
write_kind() { # write_kind VIA
  local out
  out=$(api "$1" POST /configs/create "{\"Name\":\"bench-probe-$$-$RANDOM\",\"Data\":\"aGk=\"}")
  if [[ $(tail -1 <<<"$out") == 201 ]]; then echo configs; else echo node-label; fi
}
