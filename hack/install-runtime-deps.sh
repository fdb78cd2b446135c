#!/usr/bin/env bash
# Installs what the node agent needs to run containers: runc (Debian's;
# crun does not work with this kind of machine's hybrid cgroups), and
# busybox, which the tests and examples name as a host image; and xfsprogs,
# with which the built-in CSI driver makes xfs volumes. Idempotent.
set -euo pipefail

need=()
command -v runc >/dev/null 2>&1 || need+=(runc)
command -v busybox >/dev/null 2>&1 || need+=(busybox)
command -v mkfs.xfs >/dev/null 2>&1 || [ -x /usr/sbin/mkfs.xfs ] || need+=(xfsprogs)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "install-runtime-deps: ${need[*]} missing; run as root (apt-get install ${need[*]})" >&2
    exit 1
  fi
  echo "install-runtime-deps: installing ${need[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null ||
    { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null; }
fi
echo "install-runtime-deps: $(runc --version | head -1)"
