#!/usr/bin/env bash
# Every benchmark behind docs/benchmarks.md. Usage: bench/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."
echo "# $(date -u +%Y-%m-%d) on $(nproc) cores, $(awk '/MemTotal/{printf "%d GiB", $2/1048576}' /proc/meminfo), $(go version | cut -d' ' -f3)"
bench/up.sh 10
go test -run XXX -bench . -benchtime 2s -count=1 ./internal/apiserver/ ./internal/store/embedded/ | grep -E '^(Benchmark|ok)'
# issue 7's scale benchmark: 100 hollow nodes, 10,000 pods, embedded store and etcd (~10 min)
go test ./test/scale/ -run '^$' -bench . -benchtime 1x -timeout 60m | grep -E '^(Benchmark|ok)|scale_test.go'
