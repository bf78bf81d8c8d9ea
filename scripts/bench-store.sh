#!/usr/bin/env bash
# bench-store.sh: measure orch's store (store/, bbolt) against etcd v3.7 on
# this machine in one run, and print the figures side by side.
#
# It builds etcd and a load driver from bench/etcd (a separate Go module, so
# orch never links etcd), starts etcd on loopback only with its data in a
# temporary directory (killed and removed on exit), drives it with 32 clients
# putting 1 KB values, stops it, then runs the store's Go benchmarks.
#
# Environment: ETCD_CLIENT_PORT (23790), ETCD_PEER_PORT (23800),
# PUTS (10000), ROUNDS (3), KEEP_OUTPUT=1 to keep the raw outputs.
set -euo pipefail

cd "$(dirname "$0")/.."
root=$(pwd)
client_port=${ETCD_CLIENT_PORT:-23790}
peer_port=${ETCD_PEER_PORT:-23800}
puts=${PUTS:-10000}
rounds=${ROUNDS:-3}

work=$(mktemp -d "${TMPDIR:-/tmp}/orch-bench-store.XXXXXX")
etcd_pid=""
cleanup() {
	if [ -n "$etcd_pid" ] && kill -0 "$etcd_pid" 2>/dev/null; then
		kill "$etcd_pid" 2>/dev/null || true
		wait "$etcd_pid" 2>/dev/null || true
	fi
	if [ "${KEEP_OUTPUT:-0}" = 1 ]; then
		echo "outputs kept in $work" >&2
	else
		rm -rf "$work"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== building etcd, the load driver and the store benchmarks" >&2
(cd "$root/bench/etcd" && go build -o "$work/bin/" ./cmd/etcd ./cmd/load)
go test -c -o "$work/bin/store.test" ./store/

run_etcd() {
	echo "== etcd: 32 clients, $puts puts of 1 KB" >&2
	rm -rf "$work/etcd-data"
	"$work/bin/etcd" --name bench --data-dir "$work/etcd-data" \
		--listen-client-urls "http://127.0.0.1:$client_port" \
		--advertise-client-urls "http://127.0.0.1:$client_port" \
		--listen-peer-urls "http://127.0.0.1:$peer_port" \
		--initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
		--initial-cluster "bench=http://127.0.0.1:$peer_port" \
		--log-level warn >"$work/etcd.log" 2>&1 &
	etcd_pid=$!
	for _ in $(seq 1 100); do
		if curl -sf "http://127.0.0.1:$client_port/health" >/dev/null 2>&1; then
			break
		fi
		if ! kill -0 "$etcd_pid" 2>/dev/null; then
			cat "$work/etcd.log" >&2
			echo "etcd exited" >&2
			exit 1
		fi
		sleep 0.2
	done
	"$work/bin/load" -endpoint "127.0.0.1:$client_port" -clients 32 -puts "$puts" -size 1024 >"$work/etcd.out"
	kill "$etcd_pid"
	wait "$etcd_pid" 2>/dev/null || true
	etcd_pid=""
	cat "$work/etcd.out"
}

run_store() {
	: >"$work/store.out"
	echo "== orch store benchmarks" >&2
	bench() { # name benchtime
		(cd "$work" && "$work/bin/store.test" -test.run '^$' -test.bench "$1" -test.benchtime "$2") |
			grep '^Benchmark' | tee -a "$work/store.out"
	}
	# The pair compared with etcd first, right after etcd's run.
	bench '^BenchmarkWrite$/writers=32$' "${puts}x"
	bench '^BenchmarkBoltPut$' 3000x
	bench '^BenchmarkWrite$/writers=1$' 3000x
	bench '^BenchmarkWatchDelivery$' 5000x
	bench '^BenchmarkIdleDiskWrites$' 1x
}

# metric NAME UNIT: the value reported next to UNIT on NAME's line.
metric() {
	awk -v name="$1" -v unit="$2" '$1 ~ name { for (i = 3; i < NF; i++) if ($(i+1) == unit) print $i }' "$work/store.out" | head -1
}
etcd_field() { sed -n "s|.* $1=\([0-9.]*\).*|\1|p" "$work/etcd.out"; }

report() {
	e_rate=$(etcd_field 'puts/s')
	e_p50=$(etcd_field p50_ms)
	e_p99=$(etcd_field p99_ms)
	s_rate=$(metric 'writers=32' writes/s)
	s_p50=$(metric 'writers=32' p50-ms)
	s_p99=$(metric 'writers=32' p99-ms)

	printf '%-44s %12s %10s %10s\n' "" "writes/s" "p50 ms" "p99 ms"
	printf '%-44s %12s %10s %10s\n' "etcd v3.7.3, 32 clients" "$e_rate" "$e_p50" "$e_p99"
	printf '%-44s %12s %10s %10s\n' "orch store, 32 writers" "$s_rate" "$s_p50" "$s_p99"
	printf '%-44s %12s %10s %10s\n' "orch store, 1 writer" "$(metric 'writers=1' writes/s)" "$(metric 'writers=1' p50-ms)" "$(metric 'writers=1' p99-ms)"
	printf '%-44s %12s %10s %10s\n' "raw bbolt, 1 put per tx (fsync floor)" "$(metric BoltPut puts/s)" "$(metric BoltPut p50-ms)" "$(metric BoltPut p99-ms)"
	printf '%-44s %12s %10s %10s\n' "watch delivery after commit, 100 watchers" "-" "$(metric WatchDelivery p50-ms)" "$(metric WatchDelivery p99-ms)"
	printf '%-44s %12s %10s %10s\n' "  same, from the write call (incl. fsync)" "-" "-" "$(metric WatchDelivery e2e-p99-ms)"
	echo "writes per commit (32 writers): $(metric 'writers=32' writes/commit)"
	echo "idle disk writes over 1 s: write_bytes=$(metric IdleDisk idle-write_bytes-B/s) (wchar=$(metric IdleDisk idle-wchar-B/s), runtime wake-ups included)"
	awk -v s="$s_rate" -v e="$e_rate" -v p="$s_p99" 'BEGIN {
		printf "orch/etcd throughput: %.2fx (target >= 1.2x); orch p99 %.2f ms (target <= 10 ms)\n", s / e, p
	}' | tee -a "$work/summary"
}

# Rounds alternate etcd and the store so that both see the same machine
# (other work on a shared machine moves the disk's latency a lot).
for round in $(seq 1 "$rounds"); do
	run_etcd
	run_store
	echo
	echo "== round $round of $rounds: comparison (1 KB values, fsync on every commit)"
	report
done
echo
echo "== all rounds"
cat "$work/summary"
