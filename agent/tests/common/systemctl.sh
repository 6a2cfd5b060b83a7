#!/bin/bash
# A stand-in for systemctl, for the tests of slotd's systemd Cyrus driver:
# systemd cannot run as the service manager here (CI runs without it), and
# booting one would take over the test machine. It does only what the
# driver asks, the way systemd does it for systemd/cyrus-slot@.service:
#   start UNIT          ExecStart of the real unit file (%i, ${CYRUS_ROOT}
#                       from its Environment= and the env file), in a
#                       session of its own; a running unit is left alone
#   stop UNIT...        SIGTERM to the whole group, SIGKILL after
#                       TimeoutStopSec (5 s), waits until none is left
#   show -p P --value U LoadState, MainPID, ActiveState
#   list-units ... PAT  the running units
#   kill --signal=SIGKILL PAT   SIGKILL to every running unit's group
# Where it differs from systemd: no cgroups (a unit is its process group),
# no job queue (a killed client cancels nothing, a real start job would go
# on), only active/inactive states (never failed or deactivating), no
# SIGCONT after SIGTERM, and patterns are taken as "every slot unit".
# Its settings come from the environment the test gives the agent:
# FAKE_SYSTEMD_UNIT (the unit file), FAKE_SYSTEMD_ENV (the env file that
# stands for /etc/slotd/cyrus-slot.env), FAKE_SYSTEMD_STATE (a directory).
set -u
unit_file=${FAKE_SYSTEMD_UNIT:?}
state=${FAKE_SYSTEMD_STATE:?}
mkdir -p "$state"

instance() { local u=${1#cyrus-slot@}; printf '%s' "${u%.service}"; }

# Live (not zombie) processes of group $1.
members() { pgrep -g "$1" -r R,S,D,T,t,I 2>/dev/null; }

main_pid() {
  local f="$state/$(instance "$1").pid" p
  [[ -f $f ]] || return 1
  p=$(<"$f")
  [[ -n $(members "$p") ]] && printf '%s' "$p"
}

start() {
  local unit=$1 inst cmd CYRUS_ROOT
  [[ $unit == cyrus-slot@*.service ]] || { echo "Unit $unit not found." >&2; return 5; }
  main_pid "$unit" >/dev/null && return 0
  inst=$(instance "$unit")
  CYRUS_ROOT=$(sed -n 's/^Environment=CYRUS_ROOT=//p' "$unit_file")
  if [[ -n ${FAKE_SYSTEMD_ENV:-} && -f $FAKE_SYSTEMD_ENV ]]; then
    CYRUS_ROOT=$(sed -n 's/^CYRUS_ROOT=//p' "$FAKE_SYSTEMD_ENV")
  fi
  cmd=$(sed -n 's/^ExecStart=//p' "$unit_file")
  cmd=${cmd//%i/$inst}
  cmd=${cmd//'${CYRUS_ROOT}'/$CYRUS_ROOT}
  # shellcheck disable=SC2086 # the command line is split as systemd does
  setsid $cmd </dev/null >>"$state/$inst.out" 2>&1 &
  echo $! >"$state/$inst.pid"
  # Type=exec: return once the program runs, not when it was forked.
  local i
  for ((i = 0; i < 200; i++)); do
    tr '\0' ' ' <"/proc/$!/cmdline" 2>/dev/null | grep -q "^${cmd%% *} " && return 0
    sleep 0.005
  done
  echo "$unit: the program did not start" >&2
  return 1
}

stop() {
  local unit=$1 pid i
  pid=$(main_pid "$unit") || { rm -f "$state/$(instance "$unit").pid"; return 0; }
  kill -TERM -- "-$pid" 2>/dev/null
  for ((i = 0; i < 500; i++)); do
    [[ -z $(members "$pid") ]] && break
    sleep 0.01
  done
  if [[ -n $(members "$pid") ]]; then
    kill -KILL -- "-$pid" 2>/dev/null
    for ((i = 0; i < 200; i++)); do
      [[ -z $(members "$pid") ]] && break
      sleep 0.01
    done
  fi
  rm -f "$state/$(instance "$unit").pid"
  [[ -z $(members "$pid") ]]
}

show() {
  local prop=$3 unit=$5
  case $prop in
    LoadState) [[ $unit == cyrus-slot@*.service && -f $unit_file ]] && echo loaded || echo not-found ;;
    MainPID) main_pid "$unit" || echo 0; echo ;;
    ActiveState) main_pid "$unit" >/dev/null && echo active || echo inactive ;;
    *) echo "unknown property $prop" >&2; return 1 ;;
  esac
}

case ${1:-} in
  start) shift; for u; do start "$u" || exit $?; done ;;
  stop) shift; for u; do stop "$u" || exit 1; done ;;
  show) show "$@" ;;
  kill)
    for f in "$state"/*.pid; do
      [[ -f $f ]] || continue
      p=$(main_pid "cyrus-slot@$(basename "$f" .pid).service") && kill -KILL -- "-$p" 2>/dev/null
    done
    exit 0 ;;
  list-units)
    for f in "$state"/*.pid; do
      [[ -f $f ]] || continue
      u="cyrus-slot@$(basename "$f" .pid).service"
      main_pid "$u" >/dev/null && echo "$u loaded active running"
    done ;;
  *) echo "systemctl stand-in: ${1:-} is not supported" >&2; exit 1 ;;
esac
