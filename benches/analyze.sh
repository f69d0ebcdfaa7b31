#!/usr/bin/env bash
# Benchmark of the offline analyzer: lint, diff (a few edited rules) and
# explain on generated policies of 1,000 and 10,000 rules, with nft's own
# check of the same compiled ruleset (`nft -c -f`, in a throwaway netns by unshare)
# measured in the same run as the peer. Prints a table and the 10k/1k ratios
# (10.0 is linear).
# Usage: benches/analyze.sh [RUNS=3]   (root for the nft peer; needs nft and ip)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
if [ -z "${BIN:-}" ]; then
    cargo build --release --quiet
    BIN=target/release/phantomc
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Rule shapes that overlap the way real policies do: host rules inside
# network rules, port ranges around single ports, both families, states,
# interfaces, rate limits and a run-time set.
gen() { # gen RULES EDIT(0|1)
  awk -v n="$1" -v edit="$2" 'BEGIN {
    print "table phantomc"; print "set blocklist dynamic"
    print "policy input block"; print "pass in on lo"; print "pass in state { established, related }"
    print "block in from <blocklist>"
    for (i = 0; i < n; i++) {
      a = int(i / 250) % 250; b = i % 250; k = i % 6
      if (edit && i == int(n / 2)) print "pass in proto tcp from 10.99.0.0/16 to port 5432 state new"
      if (edit && i % int(n / 5) == 7) { printf "block in proto tcp from 10.%d.%d.0/24 to port %d\n", a, b, 1000 + i % 60000; continue }
      if (k == 0) printf "pass in proto tcp from 10.%d.%d.0/24 to port %d state new\n", a, b, 1000 + i % 60000
      else if (k == 1) printf "block in proto tcp from 10.%d.%d.7 to port %d\n", a, b, 1000 + (i - 1) % 60000
      else if (k == 2) printf "pass in proto udp from 172.16.%d.0/24 to port { 53, 123, %d }\n", a, 2000 + i % 50000
      else if (k == 3) printf "pass in proto tcp from fd00:%x:%x::/48 to port 22 limit 10/minute\n", a, b
      else if (k == 4) printf "reject in on eth%d proto tcp from 192.168.%d.%d to port 1000-2000\n", i % 4, a, b
      else printf "pass in on eth%d proto udp to port %d counter\n", i % 4, 3000 + i % 60000
    }
  }'
}

now() { date +%s%N; }
median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
ms() { awk -v ns="$1" 'BEGIN { printf "%.1f", ns / 1e6 }'; }
time_cmd() { # runs "$@" $runs times (any exit code), prints the median in ns
  for _ in $(seq "$runs"); do
    t0=$(now); "$@" > /dev/null 2>&1 || true; t1=$(now); echo $((t1 - t0))
  done | median
}

declare -A t
for n in 1000 10000; do
  gen "$n" 0 > "$work/p$n.pf"
  gen "$n" 1 > "$work/p$n-new.pf"
  "$BIN" compile "$work/p$n.pf" > "$work/p$n.nft"
  t[compile,$n]=$(time_cmd "$BIN" compile "$work/p$n.pf")
  t[lint,$n]=$(time_cmd "$BIN" lint "$work/p$n.pf")
  t[lintjson,$n]=$(time_cmd "$BIN" lint --format json "$work/p$n.pf")
  t[diff,$n]=$(time_cmd "$BIN" diff "$work/p$n.pf" "$work/p$n-new.pf")
  t[explain,$n]=$(time_cmd "$BIN" explain "$work/p$n.pf" "tcp 10.200.1.1:4000 -> 10.0.0.1:9 in eth1 new")
  t[nft,$n]=$(time_cmd unshare --net nft -c -f "$work/p$n.nft")
  regions[$n]=$("$BIN" diff "$work/p$n.pf" "$work/p$n-new.pf" | tail -1)
  findings[$n]=$("$BIN" lint "$work/p$n.pf" 2>&1 | tail -1)
done

echo
echo "generated policies; median of $runs runs; diff: 5 rules edited and 1 inserted"
for n in 1000 10000; do echo "  $n rules: lint: ${findings[$n]}; diff: ${regions[$n]}"; done
printf '| %-42s | %10s | %10s | %8s |\n' "step" "1k rules" "10k rules" "10k/1k"
printf '|%s|%s|%s|%s|\n' "--------------------------------------------" "------------" "------------" "----------"
row() { printf '| %-42s | %10s | %10s | %8s |\n' "$1" "$(ms "${t[$2,1000]}") ms" "$(ms "${t[$2,10000]}") ms" "$(awk -v a="${t[$2,10000]}" -v b="${t[$2,1000]}" 'BEGIN { printf "%.1f", a / b }')"; }
row "phantomc lint (miette text)" lint
row "phantomc lint --format json" lintjson
row "phantomc diff" diff
row "phantomc explain (one packet)" explain
row "phantomc compile (parse + lower + emit)" compile
row "nft -c -f (peer: nft checks the ruleset)" nft
