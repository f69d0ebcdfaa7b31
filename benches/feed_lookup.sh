#!/usr/bin/env bash
# Benchmark: what a threat feed's set lookup costs each new connection, by
# the kernel layout of the same feed. Each layout sits in its own server
# namespace (veth pair to its own client namespace, as in packet_path.sh);
# rounds visit them in turn. In each round an hping3 SYN flood (a new source
# port per packet: every SYN walks the input chain up to the accepting rule)
# runs SECS seconds under `perf record` of the flooding process, whose
# samples cover the whole path of a SYN (send, veth, the server's input
# hook). Printed per layout: new connections/s (median, min-max over the
# rounds) and the share of the samples spent in nft set lookups and in
# nf_tables as a whole (mean over the rounds); the cost of a layout is its
# share above the `webserver` row's. Sample shares do not depend on how busy
# the machine is, rates do.
# Layouts: webserver.pf without a feed (the peer); the same with a feed of
# FEED lines blocked before the accepting rules, as phantomc loads it (a hash
# set per prefix length /32, /24 and an interval set for other lengths
# behind a hash set of the /16s they touch, src/ir/feed_layout.rs: one masked
# lookup each); and the same feed in one
# interval set per family, phantomc's layout before that (one lookup, a walk
# of the kernel's rbtree). per-length-v4 is per-length without the feed's
# IPv6 rules (the bench feed has no IPv6 entry): what a SYN would save if no
# rule were emitted for an empty kernel set.
# Usage: benches/feed_lookup.sh [FEED=1000000] [ROUNDS=3] [SECS=3]
# (root; needs nft, ip, hping3, nstat, perf, python3)
set -euo pipefail
cd "$(dirname "$0")/.."
feed_lines=${1:-1000000}
rounds=${2:-3}
secs=${3:-3}
. benches/lib.sh
bench_setup

names=(webserver per-length per-length-v4 interval)
cleanup() {
  bench_pairs_del
  ip netns del "$ns" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

bench_feed_policy "$feed_lines"
"$bin" feeds parse --print "$work/feed.txt" 2> /dev/null | grep / > "$work/nets"

# The hand-made layout: the compiled policy with the feed's IPv4 rules (one
# per kernel set) replaced by one lookup of the interval set, which gets every
# network of the feed.
"$bin" compile "$work/feed.pf" > "$work/compiled.nft"
python3 - "$work" <<'EOF'
import sys
work = sys.argv[1]
nets = [l.strip() for l in open(f"{work}/nets") if l.strip() and ":" not in l]
lines = open(f"{work}/compiled.nft").read().splitlines(keepends=True)
feed_rules = [i for i, l in enumerate(lines) if "@bench_v4" in l and 'comment "feed.pf:20"' in l]
assert feed_rules, "the feed's rules moved: update the bench"
lines[feed_rules[0]] = '\t\tip saddr @bench_v4 counter drop comment "feed.pf:20"\n'
with open(f"{work}/interval.nft", "w") as f:
    f.write("".join(l for i, l in enumerate(lines) if i not in feed_rules[1:]))
    for i in range(0, len(nets), 100000):
        f.write(f"add element inet phantomc bench_v4 {{ {', '.join(nets[i:i + 100000])} }}\n")
print(f"bench_v4 {len(nets)}", file=open(f"{work}/interval.nft.sizes", "w"))
EOF

i=0
for name in "${names[@]}"; do
  p="fl$$-$i"
  bench_pair "$p"
  s=(ip netns exec "$p-s")
  case "$name" in
    webserver) "${s[@]}" "$bin" apply policies/webserver.pf > /dev/null ;;
    per-length)
      bench_load_feed "$p-s" "$work/state-$i"
      ;;
    per-length-v4)
      # what emitting no rule for an empty kernel set would give: this feed
      # has no IPv6 entries, so its four IPv6 rules go
      bench_load_feed "$p-s" "$work/state-$i"
      "${s[@]}" nft -a list chain inet phantomc input | awk '/@bench_v6/ { print $NF }' |
        while read -r h; do "${s[@]}" nft delete rule inet phantomc input handle "$h"; done
      ;;
    *) "${s[@]}" nft -f "$work/$name.nft" ;;
  esac
  i=$((i + 1))
done
delivered() { ip netns exec "$1-s" nstat -asz IpInDelivers | awk '/IpInDelivers/ { print $2 }'; }

# Share (percent) of a profile's samples in set lookups and in nf_tables.
shares() {
  perf report -i "$1" --no-children --sort symbol --stdio 2> /dev/null | awk '
    /^ +[0-9.]+%/ { p = $1; sub("%", "", p); s = $3
      if (s ~ /^(nft_array|nft_rbtree|nft_rhash|nft_hash|nft_set_do_lookup|nft_lookup_eval|nft_set_catchall|nft_bitwise)|^(bsearch|memcmp|jhash)$/) look += p
      if (s ~ /^nft_|^(bsearch|memcmp|jhash)$/) nft += p }
    END { printf "%.2f %.2f\n", look, nft }'
}

for round in $(seq "$rounds"); do
  for i in "${!names[@]}"; do
    p=${bench_pairs[$i]}
    ip netns exec "$p-c" hping3 -q -S -p 443 --flood 198.51.100.1 > /dev/null 2>&1 &
    flood=$!
    sleep 0.3
    before=$(delivered "$p")
    perf record -q -o "$work/perf-$i-$round" -p "$flood" -- sleep "$secs" > /dev/null 2>&1 || true
    after=$(delivered "$p")
    kill "$flood"
    wait "$flood" 2> /dev/null || true
    echo "$i $(( (after - before) / secs )) $(shares "$work/perf-$i-$round")" >> "$work/results"
    rm -f "$work/perf-$i-$round"
  done
done

col() { awk -v i="$1" -v k="$2" '$1 == i { print $k }' "$work/results"; }
mean() { awk '{ s += $1; n++ } END { printf "%.2f", s / n }'; }
base_conn=$(col 0 2 | median)
base_look=$(col 0 3 | mean)
base_nft=$(col 0 4 | mean)

echo
echo "feed lookup: $feed_lines feed lines; $rounds interleaved rounds of $secs s"
echo "feeds update said: $(echo "$feed_said" | tail -1)"
count() { ip netns exec "$1-s" nft -j list set inet phantomc "$2" |
  python3 -c 'import json, sys; print(sum(len(o["set"].get("elem", [])) for o in json.load(sys.stdin)["nftables"] if "set" in o))'; }
echo "per-length: $(for s in bench_v4_32 bench_v4_24 bench_v4_r16 bench_v4; do echo -n "$s $(count "${bench_pairs[1]}" "$s") "; done)"
echo "interval: $(cat "$work/interval.nft.sizes")"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '| %-16s | %10s | %17s | %6s | %10s | %8s | %8s |\n' layout "new conn/s" "min-max" ratio "lookups %" "nft %" "cost %"
printf '|%s|%s|%s|%s|%s|%s|%s|\n' ------------------ ------------ ------------------- -------- ------------ ---------- ----------
for i in "${!names[@]}"; do
  c=$(col "$i" 2 | median)
  spread="$(col "$i" 2 | sort -n | head -1)-$(col "$i" 2 | sort -n | tail -1)"
  l=$(col "$i" 3 | mean)
  n=$(col "$i" 4 | mean)
  printf '| %-16s | %10s | %17s | %6s | %10s | %8s | %8s |\n' "${names[$i]}" "$c" "$spread" \
    "$(awk -v a="$c" -v b="$base_conn" 'BEGIN { printf "%.2fx", a / b }')" "$l" "$n" \
    "$(awk -v n="$n" -v b="$base_nft" 'BEGIN { printf "%+.2f", n - b }')"
done
echo "lookups %, nft %: share of the flood's samples in set lookups, in nf_tables (mean over rounds);"
echo "cost %: nft % above the webserver row's (what the feed adds to a SYN's CPU time)"
