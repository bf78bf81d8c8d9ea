#!/usr/bin/env bash
# idle-memory.sh: idle memory of the real orch binary (issues 3 and 6).
#
#   scripts/idle-memory.sh [BIN]      BIN defaults to bin/orch (make build)
#
# Each run builds a throw-away lab of network namespaces (a switch and two
# hosts, 172.31.251.0/24; nothing in the machine's own namespace), then
#   1. starts `orch server --disable-agent` on host srv, waits IDLE seconds
#      (60) and reads its /proc/PID/status and smaps_rollup: the empty
#      cluster's server;
#   2. starts `orch agent` on host agt, joined to that server with the token
#      it wrote, waits until the Node is registered and IDLE more seconds, and
#      reads the agent's figures the same way.
# It prints VmRSS, RssAnon, RssFile per run and the median of RUNS runs.
#
# BIN is copied into the run directory first: most of the RSS is the
# binary's own pages (RssFile), and how many stay resident depends on the
# page cache of the file — whether other processes (an e2e run of bin/orch)
# keep touching the same pages, and the kernel's proactive reclaim of cold
# pages (DAMON pageout on these VMs) — so each run gets a private copy that
# only the measured processes use, and a rebuild of BIN mid-run changes
# nothing.
#
# Everything a run creates is removed on exit, also on failure or ^C: the
# orch processes, the namespaces (and with them the nftables tables and
# links orch made inside), mounts under the run's directory, the cgroup
# directories named after the run in every hierarchy, the run's directory.
# Only names with this run's prefix (orchmem-<pid>-) are touched.
#
# Environment: RUNS (3), IDLE (60), ONLY=server|agent (both),
# KEEP=1 keeps the run directory (logs, smaps) and prints its path.
set -euo pipefail

cd "$(dirname "$0")/.."
bin=$(realpath "${1:-bin/orch}")
runs=${RUNS:-3}
idle=${IDLE:-60}
only=${ONLY:-}
[ "$(id -u)" -eq 0 ] || { echo "idle-memory.sh: needs root" >&2; exit 1; }
[ -x "$bin" ] || { echo "idle-memory.sh: $bin: not an executable (make build)" >&2; exit 1; }

id=orchmem-$$
subnet=172.31.251
work=$(mktemp -d "${TMPDIR:-/tmp}/$id.XXXXXX")
pids=()

# unmount_under detaches every mount point at or below $1, deepest first.
unmount_under() {
	awk -v d="$1" '$5 == d || index($5, d "/") == 1 { print length($5), $5 }' /proc/self/mountinfo |
		sort -rn | cut -d' ' -f2- | while read -r m; do
		umount -l "$m" 2>/dev/null || true
	done
}

# remove_cgroup rmdirs cgroup directory $1 in every hierarchy, depth first,
# killing what is still in it.
remove_cgroup() {
	local d
	for h in /sys/fs/cgroup/*/; do
		d=$h$1
		[ -d "$d" ] || continue
		find "$d" -depth -type d | while read -r c; do
			xargs -r kill -9 <"$c/cgroup.procs" 2>/dev/null || true
			for _ in 1 2 3 4 5 6 7 8 9 10; do
				rmdir "$c" 2>/dev/null && break
				sleep 0.2
			done
		done
	done
}

# cleanup_run stops a run's processes and removes what they made.
cleanup_run() {
	set +e
	for p in "${pids[@]}"; do
		kill -TERM "$p" 2>/dev/null
	done
	for p in "${pids[@]}"; do
		for _ in $(seq 1 100); do
			kill -0 "$p" 2>/dev/null || break
			sleep 0.1
		done
		kill -9 "$p" 2>/dev/null
	done
	pids=()
	for f in /run/netns/"$id"-*; do
		[ -e "$f" ] || continue
		ip netns pids "${f##*/}" 2>/dev/null | xargs -r kill -9 2>/dev/null
		ip netns del "${f##*/}" 2>/dev/null
	done
	unmount_under "$work"
	remove_cgroup "$id-agt"
	set -e
}

cleanup() {
	trap '' PIPE
	cleanup_run
	if [ "${KEEP:-0}" = 1 ]; then
		echo "run directory kept: $work" >&2
	else
		rm -rf "$work"
	fi
}
trap cleanup EXIT
# A closed output pipe or hangup ends the run through the same cleanup.
trap 'exit 130' INT TERM HUP PIPE

# private_bin copies BIN to a file only this run uses; sets $exe.
private_bin() {
	exe=$work/orch.$1
	cp "$bin" "$exe"
}

lab_up() {
	ip netns add "$id-sw"
	ip -n "$id-sw" link add sw0 type bridge
	ip -n "$id-sw" link set sw0 up
	local role ip
	for pair in srv:10 agt:11; do
		role=${pair%%:*} ip=$subnet.${pair##*:}
		ip netns add "$id-$role"
		ip -n "$id-sw" link add "$role" type veth peer name eth0 netns "$id-$role"
		ip -n "$id-sw" link set "$role" master sw0 up
		ip -n "$id-$role" link set lo up
		ip -n "$id-$role" addr add "$ip/24" dev eth0
		ip -n "$id-$role" link set eth0 up
	done
}

# start ROLE ARGS...: runs orch ARGS in host ROLE's namespace; sets $pid.
start() {
	local role=$1
	shift
	setsid nsenter --net="/run/netns/$id-$role" -- "$exe" "$@" >>"$work/$role.log" 2>&1 </dev/null &
	pid=$!
	pids+=("$pid")
}

alive() {
	kill -0 "$1" 2>/dev/null || { echo "idle-memory.sh: orch exited, log:" >&2; tail -20 "$2" >&2; exit 1; }
}

# measure NAME PID: one line "NAME VmRSS RssAnon RssFile" in kB, and the
# process's smaps_rollup and status kept in the run directory.
measure() {
	cat "/proc/$2/smaps_rollup" >"$work/$1.smaps_rollup"
	cat "/proc/$2/status" >"$work/$1.status"
	cat "/proc/$2/smaps" >"$work/$1.smaps"
	awk -v n="$1" '/^VmRSS:/ {r=$2} /^RssAnon:/ {a=$2} /^RssFile:/ {f=$2} END {print n, r, a, f}' "/proc/$2/status"
}

one_run() {
	local run=$1
	local dir=$work/run$run
	mkdir -p "$dir"
	echo "nameserver $subnet.10" >"$dir/resolv.conf"
	private_bin "$run"
	lab_up
	start srv server --disable-agent --data-dir "$dir/srv" --node-name srv \
		--write-kubeconfig "$dir/admin.yaml" --resolv-conf "$dir/resolv.conf" \
		--advertise-address "$subnet.10" --node-ip "$subnet.10"
	local srv=$pid
	local t0=$SECONDS
	until [ -s "$dir/srv/server/token" ] && [ -s "$dir/admin.yaml" ]; do
		alive "$srv" "$work/srv.log"
		[ $((SECONDS - t0)) -lt 60 ] || { echo "idle-memory.sh: server not up in 60 s" >&2; exit 1; }
		sleep 0.2
	done
	if [ "$only" != agent ]; then
		sleep $((idle - (SECONDS - t0) > 0 ? idle - (SECONDS - t0) : 0))
		alive "$srv" "$work/srv.log"
		measure "server" "$srv" | tee -a "$work/server.txt" >&2
		cp "$work/server.smaps" "$work/server.smaps.$run"
	fi
	if [ "$only" != server ]; then
		start agt agent --server "https://$subnet.10:6443" --token "$(cat "$dir/srv/server/token")" \
			--data-dir "$dir/agt" --node-name agt --cgroup-root "/$id-agt" \
			--resolv-conf "$dir/resolv.conf" --node-ip "$subnet.11" --log-level warn
		local agt=$pid
		t0=$SECONDS
		sed "s|^\( *server: *\)https://.*|\1https://$subnet.10:6443|" "$dir/admin.yaml" >"$dir/client.yaml"
		until nsenter --net="/run/netns/$id-srv" -- "$exe" kubectl --kubeconfig "$dir/client.yaml" \
			get node agt >"$work/kubectl.log" 2>&1; do
			alive "$agt" "$work/agt.log"
			[ $((SECONDS - t0)) -lt 60 ] || { echo "idle-memory.sh: agent not registered in 60 s" >&2; exit 1; }
			sleep 0.5
		done
		sleep $((idle - (SECONDS - t0) > 0 ? idle - (SECONDS - t0) : 0))
		alive "$agt" "$work/agt.log"
		measure "agent" "$agt" | tee -a "$work/agent.txt" >&2
		cp "$work/agent.smaps" "$work/agent.smaps.$run"
	fi
	cleanup_run
	rm -f "$exe"
}

mb() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }

median() { # file column
	sort -n -k"$2" "$1" | awk -v c="$2" '{v[NR]=$c} END {print v[int((NR+1)/2)]}'
}

echo "== $bin, $runs runs, ${idle}s idle; load: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for r in $(seq 1 "$runs"); do
	one_run "$r"
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
for n in server agent; do
	[ -s "$work/$n.txt" ] || continue
	printf '%-6s median of %d: VmRSS %5s MB  RssAnon %5s MB  RssFile %5s MB\n' "$n" "$(wc -l <"$work/$n.txt")" \
		"$(mb "$(median "$work/$n.txt" 2)")" "$(mb "$(median "$work/$n.txt" 3)")" "$(mb "$(median "$work/$n.txt" 4)")"
done
