#!/usr/bin/env bash
# Benchmark of lint on the two shapes that were quadratic (issue 13, item 8):
# N rules on distinct interface wildcards (`pass in on ethI* ...`), and one
# rule using a define of M addresses. Each at two sizes 10x apart, with
# `phantomc compile` and nft's own check of the compiled ruleset
# (`nft -c -f`, in a throwaway netns by unshare) measured in the same run as
# peers. Prints a table and the big/small ratios (10.0 is linear).
# Usage: benches/lint_scaling.sh [RUNS=3] [RULES=20000] [ADDRESSES=200000]
#        (root for the nft peer; needs nft and unshare)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
rules=${2:-20000}
addrs=${3:-200000}
# now, median, ms, time_cmd
source benches/lib.sh
[ -n "${BIN:-}" ] || { cargo build --release --quiet; BIN=target/release/phantomc; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# A policy that is otherwise clean: loopback, replies and SSH pass.
head_lines() {
  printf 'policy input block\npass in on lo\npass in state { established, related }\npass in proto tcp to port 22 state new\n'
}
gen_ifaces() { # N rules, each on its own interface wildcard and port
  head_lines
  awk -v n="$1" 'BEGIN { for (i = 0; i < n; i++) printf "pass in on eth%d* proto tcp to port %d\n", i, 1000 + i % 60000 }'
}
gen_define() { # one define of N single addresses (every other one, so none aggregate), used by one rule
  awk -v n="$1" 'BEGIN { printf "define many = { "
    for (i = 0; i < n; i++) { v = 2 * i; if (i) printf ", "; printf "10.%d.%d.%d", int(v / 65536) % 256, int(v / 256) % 256, v % 256 }
    print " }" }'
  head_lines
  echo 'block in from $many'
}

declare -A t size findings
size[ifaces,small]=$((rules / 10)); size[ifaces,big]=$rules
size[define,small]=$((addrs / 10)); size[define,big]=$addrs
for shape in ifaces define; do
  for s in small big; do
    n=${size[$shape,$s]}
    p="$work/$shape-$n.pf"
    "gen_$shape" "$n" > "$p"
    "$BIN" compile "$p" > "$p.nft"
    t[$shape,$s,lint]=$(time_cmd "$BIN" lint "$p")
    t[$shape,$s,compile]=$(time_cmd "$BIN" compile "$p")
    t[$shape,$s,nft]=$(time_cmd unshare --net nft -c -f "$p.nft")
    findings[$shape,$s]=$("$BIN" lint "$p" 2>&1 | tail -1)
  done
done

echo
echo "median of $runs runs; lint findings: interfaces ${findings[ifaces,big]}, define ${findings[define,big]}"
printf '| %-48s | %12s | %12s | %8s |\n' "step" "small" "big (10x)" "big/small"
printf '|%s|%s|%s|%s|\n' "--------------------------------------------------" "--------------" "--------------" "----------"
row() { # row LABEL SHAPE STEP
  local a=${t[$2,small,$3]} b=${t[$2,big,$3]}
  printf '| %-48s | %9s ms | %9s ms | %8s |\n' "$1" "$(ms "$a")" "$(ms "$b")" "$(awk -v a="$b" -v b="$a" 'BEGIN { printf "%.1f", a / b }')"
}
ifs="${size[ifaces,small]} / ${size[ifaces,big]} rules on ethI*"
defs="${size[define,small]} / ${size[define,big]}-address define"
row "lint: $ifs" ifaces lint
row "compile: $ifs" ifaces compile
row "nft -c -f (peer): $ifs" ifaces nft
row "lint: $defs" define lint
row "compile: $defs" define compile
row "nft -c -f (peer): $defs" define nft
