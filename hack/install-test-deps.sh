#!/usr/bin/env bash
# Installs, or checks, everything the tests need beyond Go, so that a fresh
# machine runs `make test` with nothing done by hand. Idempotent.
set -euo pipefail

"$(dirname "$0")/install-runtime-deps.sh"

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
