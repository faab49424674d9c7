#!/usr/bin/env bash
# idle-rss.sh — resident memory of idle daemons: 3 managers + 2 workers,
# healthy, then IDLE seconds (default 20) without any request; prints each
# daemon's VmRSS and VmHWM (/proc/PID/status), thread count, and the CPU it
# used while idle (utime+stime delta from /proc/PID/stat).
source "$(dirname "$0")/lib.sh"
IDLE=${IDLE:-20}
need_bins
bench_setup

start_init m1
start_join m2 manager m1
start_join m3 manager m1
start_join w1 worker m1
start_join w2 worker m1
wait_healthy 60
L=$(leader)
log "3 managers + 2 workers up (leader $L); idle ${IDLE}s"

declare -A C0=()
for n in "${NAMES[@]}"; do C0[$n]=$(cpu_ticks "${PID[$n]}"); done
sleep "$IDLE"
la=$(load_avg)
printf '%-4s %-8s %-7s %10s %10s %8s %12s\n' node role leader VmRSS VmHWM threads idle-cpu
for n in "${NAMES[@]}"; do
  p=${PID[$n]}
  ours "$p" || die "$n is not running"
  rss=$(awk '/^VmRSS:/{print $2}' "/proc/$p/status")
  hwm=$(awk '/^VmHWM:/{print $2}' "/proc/$p/status")
  thr=$(awk '/^Threads:/{print $2}' "/proc/$p/status")
  cpu=$(awk -v a="$(cpu_ticks "$p")" -v b="${C0[$n]}" -v hz="$HZ" -v t="$IDLE" 'BEGIN{printf "%.2f%%", (a-b)/hz/t*100}')
  printf '%-4s %-8s %-7s %7.1f MB %7.1f MB %8s %12s\n' "$n" "${ROLE[$n]}" "$([[ $n == "$L" ]] && echo yes || echo no)" \
    "$(awk -v k="$rss" 'BEGIN{print k/1024}')" "$(awk -v k="$hwm" 'BEGIN{print k/1024}')" "$thr" "$cpu"
done
echo "(MB = MiB; load average at measurement: $la)"
