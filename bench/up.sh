#!/usr/bin/env bash
# Measures `moorage up`: time until /readyz answers (from exec, measured from
# outside the process), and resident memory when idle, over N fresh starts
# and N restarts on existing state. Usage: bench/up.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-10}
bin=$(mktemp -d)/moorage
go build -o "$bin" ./cmd/moorage
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
measure() { # dir -> sets pid and ms
  local dir=$1 p; p=$(port)
  local t0; t0=$(date +%s%N)
  "$bin" up --data-dir "$dir" --listen "127.0.0.1:$p" >/dev/null 2>&1 &
  pid=$!
  until curl -sfk "https://127.0.0.1:$p/readyz" >/dev/null 2>&1; do sleep 0.002; done
  local t1; t1=$(date +%s%N)
  ms=$(( (t1 - t0) / 1000000 ))
}
for kind in fresh restart; do
  total=0; dir=$(mktemp -d)
  for i in $(seq "$n"); do
    [ "$kind" = fresh ] && { rm -rf "$dir"; dir=$(mktemp -d); }
    measure "$dir"
    total=$((total + ms))
    if [ "$i" = "$n" ]; then
      sleep 5
      rss=$(awk '/VmRSS/{print $2}' /proc/$pid/status); anon=$(awk '/RssAnon/{print $2}' /proc/$pid/status); file=$(awk '/RssFile/{print $2}' /proc/$pid/status)
    fi
    kill -TERM "$pid"; wait "$pid" || true
  done
  rm -rf "$dir"
  echo "moorage up ($kind data dir): mean ready $((total / n)) ms over $n runs; idle after 5 s: RSS $((rss/1024)) MiB (anonymous $((anon/1024)) MiB, file-backed $((file/1024)) MiB)"
done
