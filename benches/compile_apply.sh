#!/usr/bin/env bash
# Benchmark: compile time of a generated 10,000-rule policy, and load time of
# the compiled ruleset by `phantomc apply` against `nft -f` / `nft -j -f` of
# the same ruleset, side by side in one run, inside a throwaway netns.
# Usage: benches/compile_apply.sh [RULES] [RUNS]   (root; needs nft and ip)
# BASELINE=/path/to/an/older/phantomc adds its apply as a row of the same run.
set -euo pipefail
cd "$(dirname "$0")/.."
rules=${1:-10000}
runs=${2:-5}
. benches/lib.sh
bench_setup

# A policy with many rule shapes: per-host ssh, port lists, v4/v6 nets, limits.
{
  printf 'table phantomc\nset blocklist dynamic\npolicy input block\npass in on lo\npass in state { established, related }\n'
  bench_interleaved "$rules"
} > "$work/big.pf"

compile_nft=$(time_cmd "$bin" compile "$work/big.pf")
compile_json=$(time_cmd "$bin" compile --format json "$work/big.pf")
"$bin" compile "$work/big.pf" > "$work/big.nft"
"$bin" compile --format json "$work/big.pf" > "$work/big.json"
# One `"rule": {` object per nft rule (set elements carry comments too, so
# counting comments in the script would count them).
nrules=$(grep -c '"rule": {' "$work/big.json")

# apply and its peer `nft -f` (and BASELINE's apply) take turns, round by
# round, so a busy machine slows each of them alike; every run replaces a
# loaded table, the first one included.
ip netns exec "$ns" nft -f "$work/big.nft"
round() { # NAME CMD...: one timed run of CMD, added to $work/NAME.times
  local name=$1
  shift
  t0=$(now); "$@" > /dev/null 2>&1; t1=$(now); echo $((t1 - t0)) >> "$work/$name.times"
}
for _ in $(seq "$runs"); do
  round nft_f ip netns exec "$ns" nft -f "$work/big.nft"
  round apply ip netns exec "$ns" "$bin" apply "$work/big.pf"
  if [ -n "${BASELINE:-}" ]; then round baseline ip netns exec "$ns" "$BASELINE" apply "$work/big.pf"; fi
done
nft_f=$(median < "$work/nft_f.times")
apply=$(median < "$work/apply.times")
if [ -n "${BASELINE:-}" ]; then baseline=$(median < "$work/baseline.times"); fi
nft_j=$(time_cmd ip netns exec "$ns" nft -j -f "$work/big.json")
check=$(time_cmd ip netns exec "$ns" nft -c -f "$work/big.nft")

echo
echo "policy: $rules policy rules -> $nrules nft rules; median of $runs runs; load average $(cut -d' ' -f1-3 /proc/loadavg)"
printf '| %-44s | %10s | %14s |\n' "step" "ms" "vs nft -f"
printf '|%s|%s|%s|\n' "----------------------------------------------" "------------" "----------------"
row() { printf '| %-44s | %10s | %14s |\n' "$1" "$(ms "$2")" "$(awk -v a="$2" -v b="$nft_f" 'BEGIN { printf "%.2fx", a / b }')"; }
row "phantomc compile (nft script)" "$compile_nft"
row "phantomc compile --format json" "$compile_json"
row "nft -c -f (check only)" "$check"
row "nft -f big.nft (peer: load the script)" "$nft_f"
row "nft -j -f big.json (peer: load the JSON)" "$nft_j"
row "phantomc apply (compile+load+verify)" "$apply"
if [ -n "${BASELINE:-}" ]; then row "baseline apply ($BASELINE)" "$baseline"; fi
