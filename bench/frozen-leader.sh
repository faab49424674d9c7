#!/usr/bin/env bash
# frozen-leader.sh [RUNS=5] — a leader that freezes (or, CUT=1, is cut off) instead of dying.
#
# 3 managers + 2 workers. Each run: SIGSTOP the leader (a long stall, or a
# network cut seen from the others: its connections stay open and say
# nothing) and from that instant write through another manager until a write
# is accepted (examples/api_load.rs `failover --freeze`). Then watch every
# node's state through that manager for WATCH s (default 6), every 100 ms:
# the frozen manager must be marked DOWN once the new leader's grace is over
# (2 s + 3 heartbeat periods after it took over), and no other node may be:
# their agents must have left the silent session for the new leader by then.
# Then SIGCONT, and the cluster must be healthy again before the next run.
# Per run: stop -> first accepted write, stop -> frozen manager DOWN, and the
# other nodes seen DOWN (the goal is none).
#
# CUT=1: a network partition instead. Every daemon runs on a host of its own
# (NETNS=1, see lib.sh) and each run cuts the leader's cable (`failover
# --cut-cmd`) and restores it at the end. Also reported: cut -> the cut-off
# leader's own API shows no leader (it has had no quorum for 2 s: it refuses
# writes and stops its leader components; `check_quorum` in manager.rs).
# Env: WATCH, SETTLE (s between runs, default 2), CUT, see also bench/lib.sh.
source "$(dirname "$0")/lib.sh"
RUNS=${1:-5}
WATCH=${WATCH:-6}
SETTLE=${SETTLE:-2}
need_bins api_load
bench_setup

three_managers
start_join w1 worker m1
start_join w2 worker m1
wait_healthy 60
KIND=$(write_kind m1)
log "3 managers + 2 workers up; write = $KIND"

declare -a W=() D=() N=()
bad=0
if ((CUT)); then what=cut; else what=stop; fi
printf '%-4s %-7s %-5s %15s %15s %15s  %-22s %s\n' run leader via "$what-to-write" "$what-to-down" "$what-to-noleader" "others seen down" load-avg
for ((r = 1; r <= RUNS; r++)); do
  sleep "$SETTLE"
  L=$(leader) || die "no leader"
  S=""; for m in $(alive_managers); do [[ $m != "$L" ]] && { S=$m; break; }; done
  la=$(load_avg)
  t0=$EPOCHREALTIME
  if ((CUT)); then
    fault=(--cut-cmd "$(cable_cmd "$L" down)")
    heal() { cable "$L" up; }
  else
    fault=(--kill-pid "${PID[$L]}" --freeze)
    heal() { kill -CONT "${PID[$L]}"; }
  fi
  out=$(helper failover --socket "$(sock "$S")" "${fault[@]}" --write "$KIND" 2>&1)
  rc=$?
  ms=$(result_field kill_to_write_ms <<<"$out")
  [[ $rc == 0 && -n $ms ]] || { heal; echo "$out" >&2; die "run $r: no write accepted"; }
  W+=("$ms")
  down="-"; others=""; noleader="-"
  while awk -v a="$t0" -v b="$EPOCHREALTIME" -v w="$WATCH" 'BEGIN{exit !(b - a < w)}'; do
    j=$(api "$S" GET /nodes | head -n -1)
    now=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.0f", (b - a) * 1000}')
    for n in $(jq -r '.[] | select(.Status.State == "down") | .Description.Hostname' <<<"$j" 2>/dev/null); do
      if [[ $n == "$L" ]]; then
        [[ $down == - ]] && down=$now
      elif [[ " $others " != *" $n "* ]]; then
        others+=" $n"
      fi
    done
    if ((CUT)) && [[ $noleader == - ]]; then
      j=$(api "$L" GET /nodes | head -n -1)
      jq -e 'length > 0 and (map(select(.ManagerStatus.Leader == true)) | length == 0)' <<<"$j" >/dev/null 2>&1 &&
        noleader=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.0f", (b - a) * 1000}')
    fi
    sleep 0.1
  done
  heal
  [[ $down != - ]] && D+=("$down")
  [[ $noleader != - ]] && N+=("$noleader")
  [[ -n $others ]] && bad=$((bad + 1))
  printf '%-4s %-7s %-5s %15s %15s %15s  %-22s %s\n' "$r" "$L" "$S" "$ms ms" "$down ms" "$noleader ms" "${others:- none}" "$la"
  grep '^  failed attempt' <<<"$out" | sed 's/^/     /'
  wait_healthy 60
done
echo "median $what -> first accepted write: $(median "${W[@]}") ms; $what -> old leader down: $(median "${D[@]:-0}") ms ($((${#D[@]})) of $RUNS runs); runs where another node was marked down: $bad of $RUNS; load now $(load_avg)"
((CUT)) && echo "median cut -> the cut-off leader shows no leader: $(median "${N[@]:-0}") ms (${#N[@]} of $RUNS runs)"
