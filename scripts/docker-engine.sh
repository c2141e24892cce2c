#!/usr/bin/env bash
# Make a Docker engine answer on /var/run/docker.sock, reusing one that already does.
#
#   scripts/docker-engine.sh start [PIDFILE]   install docker.io if dockerd is missing; start dockerd
#                                              in the background unless the socket already answers.
#                                              PIDFILE is written only when this call started dockerd.
#   scripts/docker-engine.sh stop  [PIDFILE]   stop the dockerd recorded in PIDFILE (and only that one).
#
# There is no systemd on the machines this runs on, so the daemon is started by hand.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

cmd=${1:-start}
pidfile=${2:-${DOCKERD_PIDFILE:-/tmp/wasmlet-dockerd.pid}}
sock=/var/run/docker.sock
log=${DOCKERD_LOG:-${pidfile%.pid}.log}
wait_s=${DOCKERD_WAIT_S:-60}

answering() { [[ -S $sock ]] && docker -H "unix://$sock" info >/dev/null 2>&1; }

start() {
  "$here/need-command.sh" dockerd docker.io
  if answering; then
    echo "docker-engine: reusing the engine already answering on $sock"
    return 0
  fi
  if [[ -f $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    echo "docker-engine: dockerd $(cat "$pidfile") from $pidfile is starting; waiting"
  else
    # A socket left behind by a dead daemon would make dockerd refuse to start.
    [[ -S $sock ]] && rm -f "$sock"
    mkdir -p "$(dirname "$pidfile")"
    # setsid: the daemon must outlive this script and not receive the caller's Ctrl-C.
    setsid dockerd --host "unix://$sock" >"$log" 2>&1 < /dev/null &
    echo $! >"$pidfile"
    echo "docker-engine: started dockerd pid $(cat "$pidfile") (log $log)"
  fi
  for ((i = 0; i < wait_s * 2; i++)); do
    if answering; then
      echo "docker-engine: engine ready after $((i / 2))s"
      return 0
    fi
    if ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      echo "docker-engine: dockerd exited; last log lines:" >&2
      tail -n 20 "$log" >&2 || true
      rm -f "$pidfile"
      return 1
    fi
    sleep 0.5
  done
  echo "docker-engine: $sock did not answer within ${wait_s}s" >&2
  return 1
}

stop() {
  [[ -f $pidfile ]] || { echo "docker-engine: no $pidfile; nothing started by us to stop"; return 0; }
  local pid
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null && [[ $(cat "/proc/$pid/comm" 2>/dev/null) == dockerd ]]; then
    kill -TERM "$pid"
    for ((i = 0; i < 60; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.5
    done
    if kill -0 "$pid" 2>/dev/null; then
      echo "docker-engine: dockerd $pid ignored SIGTERM for 30s; killing" >&2
      kill -KILL "$pid" 2>/dev/null || true
    fi
    echo "docker-engine: stopped dockerd pid $pid"
  fi
  rm -f "$pidfile"
}

case $cmd in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop [PIDFILE]" >&2; exit 2 ;;
esac
