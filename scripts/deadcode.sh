#!/usr/bin/env bash
# deadcode.sh: is the Go linker's method dead-code elimination on for orch,
# and if not, what turns it off?
#
#   scripts/deadcode.sh        exit 0: on; exit 1: off (the culprits printed)
#
# When any reachable function may call a method by a name known only at run
# time (reflect.Value.MethodByName and friends, marked <ReflectMethod> by
# the linker), the linker keeps every exported method of every type that is
# ever put in an interface, used or not. For orch that is about a quarter of
# the loaded image (text, rodata, pclntab), and every orch process maps and
# faults in its image. text/template's field evaluation is the usual
# culprit: any template execution reachable from main turns it off.
#
# It builds orch as `make build` does (TAGS overrides the tags) with
# -ldflags=-dumpdep, then prints each <ReflectMethod> function with the
# shortest call chain from main that reaches it, each template execution
# reached and its chain, and the packages importing the packages those
# chains start in.
set -euo pipefail

cd "$(dirname "$0")/.."
tags=${TAGS:-seccomp grpcnotrace orch_kubectl orch_init}
work=$(mktemp -d "${TMPDIR:-/tmp}/orch-deadcode.XXXXXX")
trap 'rm -rf "$work"' EXIT

if ! CGO_ENABLED=1 go build -trimpath -tags "$tags" -ldflags '-s -w -dumpdep' -o "$work/orch" . 2>"$work/deps"; then
	grep -v ' -> ' "$work/deps" >&2 || true
	echo "deadcode.sh: build failed" >&2
	exit 2
fi

# chains FILE: for each target (one per line in FILE), the shortest chain of
# calls and references from a main function or a package initialisation to
# it that does not pass through a type descriptor. Targets reached only
# through methods kept because their type is used in an interface (which
# the linker keeps exactly because elimination is off) are counted, not
# printed: they go once the direct ones are gone.
chains() {
	awk -v targets="$1" '
	BEGIN {
		while ((getline t < targets) > 0) want[t] = 1
	}
	/ -> / {
		n = index($0, " -> ")
		a = substr($0, 1, n - 1); b = substr($0, n + 4)
		sub(/ <[A-Za-z]+>$/, "", a); sub(/ <[A-Za-z]+>$/, "", b)
		k = b SUBSEP a
		if (!(k in seen)) { seen[k] = 1; nrev[b]++; rev[b, nrev[b]] = a }
	}
	END {
		for (t in want) {
			delete from; head = 1; tail = 0
			q[++tail] = t; from[t] = ""; found = ""
			while (head <= tail && found == "") {
				x = q[head++]
				if (x ~ /^main\./ || x ~ /\.\.inittask$/ || x ~ /\.init(\.[0-9]+)?$/) { found = x; break }
				for (i = 1; i <= nrev[x]; i++) {
					p = rev[x, i]
					if (p !~ /^type:/ && !(p in from)) { from[p] = x; q[++tail] = p }
				}
			}
			if (found == "") { indirect++; continue }
			print "  " t
			for (x = found; x != t; x = from[x]) print "    <- " x
		}
		if (indirect) printf "  (%d more reached only through methods kept for interfaces)\n", indirect
	}' "$work/deps"
}

grep -E ' <ReflectMethod>( |$)' "$work/deps" | sed -E 's/ -> .*//; s/ <ReflectMethod>$//' | grep -v '^type:' | sort -u >"$work/reflect" || true
if [ ! -s "$work/reflect" ]; then
	echo "method dead-code elimination: on (no reachable function calls methods by run-time name)"
	exit 0
fi
echo "method dead-code elimination: OFF"
echo "reachable functions that call methods by run-time name, and the chain from main or an init to each:"
chains "$work/reflect"
grep -E ' -> (text|html)/template\.\(\*Template\)\.(execute|Execute|ExecuteTemplate)$' "$work/deps" |
	sed -E 's/ -> .*//; s/ <[A-Za-z]+>$//' | grep -v '^type:' | sort -u >"$work/exec" || true
if [ -s "$work/exec" ]; then
	echo "template executions reached (each one alone keeps elimination off), and their chains:"
	chains "$work/exec"
	echo "imported by:"
	sed -E 's/\.[^./]*$//; s/\.\(.*//' "$work/exec" | sort -u | while read -r pkg; do
		by=$(go list -tags "$tags" -deps -f '{{.ImportPath}}:{{range .Imports}} {{.}}{{end}}' . |
			awk -v p="$pkg" '{ for (i = 2; i <= NF; i++) if ($i == p) { sub(/:$/, "", $1); print $1 } }' | tr '\n' ' ')
		echo "  $pkg <- ${by:-(main)}"
	done
fi
exit 1
