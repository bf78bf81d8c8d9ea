#!/bin/sh
# lab.sh — the multi-host test lab of internal/lab, by hand.
#
#   scripts/lab.sh up N     N hosts (h0..h<N-1>, 172.31.250.10+i) and a client
#                           (172.31.250.200), each a network namespace with an
#                           eth0 on a switch bridge in a lab namespace
#   scripts/lab.sh down     delete every lab made by this script, and leftovers
#                           of crashed test runs
#   scripts/lab.sh down PID delete only the lab whose keeper is PID
#   scripts/lab.sh ls       list lab namespaces
#
# Nothing is created in the machine's own network namespace. Names are
# orchlab-<owner pid>-sh-<role>; the owner is a keeper process (sleep) that
# `down` stops. The Go lab's start-up sweep deletes namespaces whose owner
# is gone, so a lab of a killed keeper is cleaned up by the next test run.
# Run a command in a host:  ip netns exec orchlab-<pid>-sh-h0 <command>
set -eu

PREFIX=orchlab-
SUBNET=172.31.250

die() { echo "lab.sh: $*" >&2; exit 1; }

up() {
	n=$1
	case $n in ''|*[!0-9]*) die "up: host count must be a number";; esac
	[ "$n" -ge 1 ] && [ "$n" -le 150 ] || die "up: host count must be 1..150"
	[ "$(id -u)" -eq 0 ] || die "needs root"
	# The keeper owns the lab: its pid names the namespaces.
	setsid sleep infinity </dev/null >/dev/null 2>&1 &
	keeper=$!
	id=$PREFIX$keeper-sh
	trap 'down_one "$keeper"' EXIT INT TERM
	ip netns add "$id-switch"
	ip -n "$id-switch" link add sw0 type bridge
	ip -n "$id-switch" link set sw0 up
	i=0
	while [ "$i" -lt "$n" ]; do
		add_host "$id" "h$i" "$SUBNET.$((10 + i))"
		i=$((i + 1))
	done
	add_host "$id" client "$SUBNET.200"
	trap - EXIT INT TERM
	echo "lab $id: $n hosts"
	i=0
	while [ "$i" -lt "$n" ]; do
		echo "  $id-h$i  $SUBNET.$((10 + i))"
		i=$((i + 1))
	done
	echo "  $id-client  $SUBNET.200"
	echo "delete with: $0 down $keeper"
}

add_host() {
	id=$1 role=$2 ip=$3
	ip netns add "$id-$role"
	ip -n "$id-switch" link add "$role" type veth peer name eth0 netns "$id-$role"
	ip -n "$id-switch" link set "$role" master sw0 up
	ip -n "$id-$role" link set lo up
	ip -n "$id-$role" addr add "$ip/24" dev eth0
	ip -n "$id-$role" link set eth0 up
}

# down_one deletes the lab owned by pid and stops its keeper.
down_one() {
	pid=$1
	for ns in $(ls /run/netns 2>/dev/null | grep "^$PREFIX$pid-" || true); do
		delete_ns "$ns"
	done
	if [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q '^sleep infinity'; then
		kill "$pid" 2>/dev/null || true
	fi
}

# delete_ns kills what runs inside the namespace, then deletes it.
delete_ns() {
	pids=$(ip netns pids "$1" 2>/dev/null || true)
	[ -z "$pids" ] || kill -9 $pids 2>/dev/null || true
	ip netns del "$1" 2>/dev/null || true
}

down() {
	[ "$(id -u)" -eq 0 ] || die "needs root"
	if [ -n "${1:-}" ]; then
		case $1 in *[!0-9]*) die "down: PID must be a number";; esac
		down_one "$1"
		return
	fi
	for ns in $(ls /run/netns 2>/dev/null | grep "^$PREFIX" || true); do
		rest=${ns#"$PREFIX"}
		pid=${rest%%-*}
		run=${rest#*-}
		run=${run%%-*}
		if [ "$run" = sh ]; then
			down_one "$pid"
		elif ! kill -0 "$pid" 2>/dev/null; then
			delete_ns "$ns" # a crashed test run's
		fi
	done
}

case ${1:-} in
up) up "${2:-}" ;;
down) down "${2:-}" ;;
ls) ls /run/netns 2>/dev/null | grep "^$PREFIX" || true ;;
*) die "usage: $0 up N | down [PID] | ls" ;;
esac
