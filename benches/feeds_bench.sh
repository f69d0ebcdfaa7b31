#!/usr/bin/env bash
# Benchmark: parse + aggregate of a generated 1,000,000-line feed by
# `phantomc feeds parse` against `iprange` (FireHOL's optimizer) on the same
# file, and the atomic replacement of a feed set with that content by
# `phantomc feeds update` against `nft -f` of the same flush+add transaction,
# and a full `phantomc apply` reload with that feed against `nft -f` of the
# same table, side by side in one run, inside a throwaway netns.
# Usage: benches/feeds_bench.sh [LINES] [RUNS]   (root; needs nft, ip, iprange)
set -euo pipefail
cd "$(dirname "$0")/.."
lines=${1:-1000000}
runs=${2:-3}
. benches/lib.sh
bench_setup

# Host bits set would make a line junk: the generator never sets them.
bench_feed "$lines" > "$work/feed.txt"

# Same answer? Both print the minimal CIDR cover; iprange omits /32.
"$bin" feeds parse "$work/feed.txt" --print 2> "$work/parse.log" | sed 's#/32$##' | sort > "$work/phantomc.out"
iprange "$work/feed.txt" | sort > "$work/iprange.out"
nets=$(wc -l < "$work/phantomc.out")
same=$(cmp -s "$work/phantomc.out" "$work/iprange.out" && echo "identical" || echo "DIFFERENT")

parse_pc=$(time_cmd "$bin" feeds parse "$work/feed.txt")
parse_ir=$(time_cmd iprange "$work/feed.txt")

# The feed set in a loaded table, replaced in place.
cat > "$work/bench.pf" <<EOF
table phantomc
$(bench_feed_decl)
set blocklist dynamic
# The lockout guard refuses a policy that cuts loopback and SSH.
pass in on lo
pass in proto tcp to port 22
block in from <bench>
block in from <blocklist>
EOF
state="$work/state"
ip netns exec "$ns" "$bin" apply "$work/bench.pf" --state-dir "$state" > /dev/null
# Each run reports its own nft transaction time: keep both medians.
for _ in $(seq "$runs"); do
  t0=$(now)
  out=$(ip netns exec "$ns" "$bin" feeds update "$work/bench.pf" --state-dir "$state" 2> /dev/null)
  t1=$(now)
  echo "$((t1 - t0)) $(echo "$out" | sed -n 's/.*elements, \([0-9]*\) ms).*/\1/p')"
done > "$work/updates"
update=$(cut -d' ' -f1 "$work/updates" | median)
load_ms=$(cut -d' ' -f2 "$work/updates" | median)
# The peer: the same transaction as an nft script, each kernel set of the feed
# (src/ir/feed_layout.rs) flushed and refilled with what phantomc put there
# (read once from the kernel, untimed).
feed_sets="bench_v4_32 bench_v4_24 bench_v4_r16 bench_v4 bench_v6_128 bench_v6_64 bench_v6_48 bench_v6"
set_elems() { # SET: its elements, one a line, as nft writes them
  ip netns exec "$ns" nft -j list set inet phantomc "$1" | python3 -c '
import json, sys
for o in json.load(sys.stdin)["nftables"]:
    for e in o.get("set", {}).get("elem", []):
        print(e if isinstance(e, str) else "%s/%s" % (e["prefix"]["addr"], e["prefix"]["len"]))'
}
for s in $feed_sets; do
  echo "flush set inet phantomc $s"
  set_elems "$s" > "$work/elems"
  if [ -s "$work/elems" ]; then
    echo "add element inet phantomc $s {"
    sed '$!s/$/,/' "$work/elems"
    echo "}"
  fi
done > "$work/load.nft"
nft_f=$(time_cmd ip netns exec "$ns" nft -f "$work/load.nft")
# A full reload with the feed kept (from the cache) against `nft -f` of the
# same table replaced by a script (listed once, untimed: a listing takes
# about a minute at 800k elements with nft 1.0.6).
apply_pc=$(time_cmd ip netns exec "$ns" "$bin" apply "$work/bench.pf" --state-dir "$state")
{
  echo "add table inet phantomc"
  echo "delete table inet phantomc"
  ip netns exec "$ns" nft list table inet phantomc
} > "$work/table.nft"
apply_nft=$(time_cmd ip netns exec "$ns" nft -f "$work/table.nft")
# Reads that must not grow with the feed (netlink, no listing of the table).
ip netns exec "$ns" "$bin" block 192.0.2.7 --timeout 1h --reason bench > /dev/null
status_pc=$(time_cmd ip netns exec "$ns" "$bin" status "$work/bench.pf")
dry_pc=$(time_cmd ip netns exec "$ns" "$bin" apply --dry-run "$work/bench.pf" --state-dir "$state")
hits_pc=$(time_cmd ip netns exec "$ns" "$bin" hits "$work/bench.pf")
blocked_pc=$(time_cmd ip netns exec "$ns" "$bin" blocked "$work/bench.pf")
live=$(for s in ${feed_sets//bench_v4_r16/}; do set_elems "$s"; done | wc -l)

echo
echo "feed: $lines lines -> $nets aggregated IPv4 networks (phantomc vs iprange: $same); median of $runs runs"
printf '| %-60s | %10s |\n' "step" "ms"
printf '|%s|%s|\n' "--------------------------------------------------------------" "------------"
row() { printf '| %-60s | %10s |\n' "$1" "$2"; }
row "phantomc feeds parse (read, parse, aggregate; rayon)" "$(ms "$parse_pc")"
row "iprange FILE (peer: read, parse, optimize)" "$(ms "$parse_ir")"
row "phantomc feeds update (fetch, parse, validate, cache, load)" "$(ms "$update")"
row "  of which the flush+add nft transaction (JSON)" "$load_ms"
row "nft -f flush+add script of the same set (peer)" "$(ms "$nft_f")"
row "phantomc apply (reload, feed kept, load, verify)" "$(ms "$apply_pc")"
row "nft -f of the same table replaced by a script (peer)" "$(ms "$apply_nft")"
row "phantomc status (exact drift check over netlink)" "$(ms "$status_pc")"
row "phantomc apply --dry-run" "$(ms "$dry_pc")"
row "phantomc hits (rule counters; the API's /rules read)" "$(ms "$hits_pc")"
row "phantomc blocked (run-time entries; the API's /threats read)" "$(ms "$blocked_pc")"
echo "live feed sets after the run: $live elements (a network split into a hash set counts as its pieces)"
echo "status said: $(ip netns exec "$ns" "$bin" status "$work/bench.pf" | head -1)"
