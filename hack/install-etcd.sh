#!/usr/bin/env bash
# Installs etcd (Debian's etcd-server, 3.4 on bookworm: /usr/bin/etcd), which
# the tests of internal/store/etcd start as their own processes on random
# loopback ports. The package would also start an etcd daemon on the default
# ports (by its init script, or its systemd unit); the tests want none, so an
# install here leaves none running or enabled. Idempotent.
set -euo pipefail

if [ ! -x /usr/bin/etcd ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "install-etcd: /usr/bin/etcd missing; run as root (apt-get install etcd-server)" >&2
    exit 1
  fi
  # A policy-rc.d that forbids starting services keeps the package's
  # postinst from starting the daemon; add one for the install unless there
  # is one already.
  policy=/usr/sbin/policy-rc.d
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod +x "$policy"
    trap 'rm -f "$policy"' EXIT
  fi
  echo "install-etcd: installing etcd-server"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q etcd-server >/dev/null ||
    { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q etcd-server >/dev/null; }
  # Should a daemon have started all the same, stop it, and keep systemd
  # from starting it at boot.
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    systemctl disable --now etcd.service >/dev/null 2>&1 || true
  fi
  if [ -r /run/etcd.pid ] && kill -0 "$(cat /run/etcd.pid)" 2>/dev/null; then
    echo "install-etcd: stopping the etcd daemon the package started"
    start-stop-daemon --stop --quiet --retry 10 --pidfile /run/etcd.pid --exec /usr/bin/etcd || true
  fi
fi
echo "install-etcd: $(/usr/bin/etcd --version | head -1)"
