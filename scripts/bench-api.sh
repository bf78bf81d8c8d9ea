#!/usr/bin/env bash
# bench-api.sh: issue 3's API benchmark with ../shared/tools/apibench against
# the real binary.
#
#   scripts/bench-api.sh [BIN]      BIN defaults to bin/orch (make build)
#
# Starts `orch server --disable-agent` in a throw-away network namespace
# (HTTPS on its loopback; nothing in the machine's own namespace), then:
#   1. idle RSS (VmRSS/RssAnon) IDLE seconds (60) after start, and the time
#      from start to /readyz 200;
#   2. apibench create,list: COUNT (5000) pods from CLIENTS (32) clients,
#      creates/s and p50/p99, three LISTs of all pods; RSS with the pods,
#      right after and 30 s later (the burst over); then three LISTs with
#      curl: the server's part of a LIST, without client-go's decoding;
#   3. apibench delete; then two more create/delete cycles; RSS after the
#      three cycles, and again 30 s later.
# Each RSS line also shows RssFile split into the binary's own pages and the
# store's memory-mapped database (bbolt maps its whole file; a LIST reads it).
# apibench is built from ../shared/tools/apibench into bin/apibench when
# missing. Everything the run creates is removed on exit (process,
# namespace, run directory unless KEEP=1).
set -euo pipefail

cd "$(dirname "$0")/.."
bin=$(realpath "${1:-bin/orch}")
idle=${IDLE:-60}
count=${COUNT:-5000}
clients=${CLIENTS:-32}
[ "$(id -u)" -eq 0 ] || { echo "bench-api.sh: needs root" >&2; exit 1; }
[ -x "$bin" ] || { echo "bench-api.sh: $bin: not an executable (make build)" >&2; exit 1; }
if [ ! -x bin/apibench ]; then
	(cd ../shared/tools/apibench && go build -o "$OLDPWD/bin/apibench" .)
fi
apibench=$(realpath bin/apibench)

id=orchapi-$$
work=$(mktemp -d "${TMPDIR:-/tmp}/$id.XXXXXX")
pid=

cleanup() {
	set +e
	if [ -n "$pid" ]; then
		kill -TERM "$pid" 2>/dev/null
		for _ in $(seq 1 100); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -9 "$pid" 2>/dev/null
	fi
	if ip netns list | grep -q "^$id\b"; then
		ip netns pids "$id" 2>/dev/null | xargs -r kill -9 2>/dev/null
		ip netns del "$id"
	fi
	if [ "${KEEP:-0}" = 1 ]; then
		echo "run directory kept: $work" >&2
	else
		rm -rf "$work"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

in_ns() { nsenter --net="/run/netns/$id" -- "$@"; }

rss() { # label
	local db
	db=$(awk -v f="$work/data/server/db/state.db" '$6 == f {m=1; next} /^[0-9a-f]+-[0-9a-f]+ / {m=0} m && /^Rss:/ {s+=$2} END {print s+0}' "/proc/$pid/smaps")
	awk -v n="$1" -v db="$db" '/^VmRSS:/ {r=$2} /^RssAnon:/ {a=$2} /^RssFile:/ {f=$2} END {printf "%-22s VmRSS %6.1f MiB  RssAnon %6.1f MiB  RssFile %6.1f MiB (binary %.1f, database %.1f)\n", n, r/1024, a/1024, f/1024, (f-db)/1024, db/1024}' "/proc/$pid/status"
}

# A private copy of BIN, as scripts/idle-memory.sh does: most of the RSS is
# the binary's own pages, and how many are mapped depends on how the file
# came into the page cache (a file the linker just wrote maps far more than
# one copied with cp) and on other processes using the same file.
exe="$work/orch"
cp "$bin" "$exe"

ip netns add "$id"
ip -n "$id" link set lo up
echo "nameserver 127.0.0.1" >"$work/resolv.conf"
echo "== $bin; load: $(cut -d' ' -f1-3 /proc/loadavg)"
t0=$(date +%s%N)
setsid nsenter --net="/run/netns/$id" -- "$exe" server --disable-agent --data-dir "$work/data" \
	--node-name bench --write-kubeconfig "$work/admin.yaml" --resolv-conf "$work/resolv.conf" \
	--bind-address 127.0.0.1 --advertise-address 127.0.0.1 --node-ip 127.0.0.1 \
	>"$work/server.log" 2>&1 </dev/null &
pid=$!
until [ -s "$work/admin.yaml" ] && in_ns curl -sfk -o /dev/null https://127.0.0.1:6443/readyz; do
	kill -0 "$pid" 2>/dev/null || { echo "server exited:" >&2; tail -20 "$work/server.log" >&2; exit 1; }
	sleep 0.01
done
t1=$(date +%s%N)
echo "start to /readyz (and kubeconfig written): $(((t1 - t0) / 1000000)) ms"
sleep "$idle"
rss "idle (${idle}s)"
bench() { in_ns "$apibench" --kubeconfig "$work/admin.yaml" --clients "$clients" --count "$count" "$@"; }
bench --phases create,list | grep -E "create|list"
rss "with $count pods"
sleep 30
rss "  30 s later"
# The server's part of a LIST: the time to its last byte over HTTPS with no
# decoding (apibench's LIST times add client-go decoding the JSON).
awk '/client-certificate-data:/ {print $2}' "$work/admin.yaml" | base64 -d >"$work/admin.crt"
awk '/client-key-data:/ {print $2}' "$work/admin.yaml" | base64 -d >"$work/admin.key"
for _ in 1 2 3; do
	in_ns curl -sfk --cert "$work/admin.crt" --key "$work/admin.key" -o /dev/null \
		-w '%{size_download} %{time_total}\n' "https://127.0.0.1:6443/api/v1/namespaces/apibench/pods"
done | awk '{printf "list server part: %.1f MB to the last byte in %.1f ms (curl, JSON)\n", $1 / 1e6, $2 * 1000}'
bench --phases delete --setup=false | grep -E "delete"
for _ in 2 3; do
	bench --phases create,delete --setup=false >/dev/null
done
rss "after 3 cycles"
sleep 30
rss "30 s later"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
