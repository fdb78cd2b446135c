#!/usr/bin/env bash
# Installs, or checks, everything the tests need beyond Go, so that a fresh
# machine runs `make test` with nothing done by hand. Idempotent.
set -euo pipefail

"$(dirname "$0")/install-runtime-deps.sh"
# etcd, for the store's etcd backend (internal/store/etcd) and moorage on it.
"$(dirname "$0")/install-etcd.sh"

# csi-sanity, the CSI conformance suite: internal/csi/local's sanity test
# runs it against `moorage csi-driver`. It goes where `go install` puts
# programs, $(go env GOBIN) or else $(go env GOPATH)/bin, which is where the
# test looks for it.
csi_sanity_version=v5.4.0
gobin=$(go env GOBIN)
if [ -z "$gobin" ]; then
  gopath=$(go env GOPATH)
  gobin="${gopath%%:*}/bin"
fi
if ! go version -m "$gobin/csi-sanity" 2>/dev/null |
  grep -Eq "[[:space:]]github.com/kubernetes-csi/csi-test/v5[[:space:]]+$csi_sanity_version([[:space:]]|$)"; then
  echo "install-test-deps: installing csi-sanity $csi_sanity_version into $gobin"
  GOBIN="$gobin" go install "github.com/kubernetes-csi/csi-test/v5/cmd/csi-sanity@$csi_sanity_version"
fi
echo "install-test-deps: csi-sanity $csi_sanity_version in $gobin"

# Seed 001's MySQL StatefulSet (test/e2e/mysql_test.go) runs on host
# images: Debian's MariaDB stands in for mysql:5.7, and mariabackup plus
# ncat for the xtrabackup image, which streams a backup to the next peer.
need=()
command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || need+=(mariadb-server)
command -v mysqladmin >/dev/null 2>&1 || need+=(mariadb-client)
command -v mariabackup >/dev/null 2>&1 || need+=(mariadb-backup)
command -v ncat >/dev/null 2>&1 || need+=(ncat)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "install-test-deps: ${need[*]} missing; run as root (apt-get install ${need[*]})" >&2
    exit 1
  fi
  echo "install-test-deps: installing ${need[*]}"
  # The package must not start a MariaDB server on this machine (the test
  # runs its own, in pods): a policy-rc.d that says no, unless one is there.
  policy=/usr/sbin/policy-rc.d
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod +x "$policy"
    trap 'rm -f "$policy"' EXIT
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null ||
    { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null; }
fi
echo "install-test-deps: $(mariadbd --version 2>/dev/null || /usr/sbin/mariadbd --version)"

# The real kubectl, 1.27 through 1.33: the e2e tests drive each version. They
# ship with the machine image beside the `kubectl` dispatcher on PATH; no
# package registry reachable here carries them, so we check and say where.
kubectl_dir=""
if command -v kubectl >/dev/null 2>&1; then
  kubectl_dir=$(dirname "$(readlink -f "$(command -v kubectl)")")
fi
missing=()
for v in 27 28 29 30 31 32 33; do
  if [ -z "$kubectl_dir" ] || [ ! -x "$kubectl_dir/kubectl.1.$v" ]; then
    missing+=("kubectl.1.$v")
  fi
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-test-deps: missing ${missing[*]} (looked beside the kubectl on PATH: ${kubectl_dir:-none})." >&2
  echo "install-test-deps: the e2e tests need the real kubectl 1.27-1.33 as kubectl.1.NN; install them there." >&2
  exit 1
fi
echo "install-test-deps: kubectl 1.27-1.33 found in $kubectl_dir"
