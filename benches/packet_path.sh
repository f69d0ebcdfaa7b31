#!/usr/bin/env bash
# Benchmark: what a ruleset costs the packets that cross it. Each ruleset
# sits in its own server namespace, linked by a veth pair to its own client
# namespace; rounds go through the rulesets in turn (interleaved), and each
# measurement is the median over the rounds, printed as a ratio to the pair
# with no ruleset:
#   new conn/s  SYNs to a port nothing listens on (hping3 --flood, a new
#               source port each packet, so every one is a new conntrack
#               entry that walks the input chain), counted as the server's
#               IpInDelivers over SECS seconds;
#   bulk TCP    iperf3 -c for SECS seconds (established: the first rules);
#   ping        average round trip of 10 pings (0.2 s apart).
# new conn/s also shows its lowest and highest round, and the feed's cost is
# given per round too (webserver+feed over webserver, measured seconds apart).
# Rulesets: none; policies/webserver.pf; the same compiled without its
# counters (what counting every rule costs); the same plus a feed of FEED lines;
# a hand-written nft chain of RULES `ip saddr X drop` rules; RULES addresses
# in one nft set; the webserver policy with RULES `block in from X` lines,
# as phantomc emits it by default (optimized) and with --no-optimize; the
# webserver policy with RULES lines of compile_apply.sh's five interleaved
# shapes (bench_interleaved), optimized and with --no-optimize.
# Usage: benches/packet_path.sh [RULES=10000] [FEED=1000000] [ROUNDS=3] [SECS=3]
# (root; needs nft, ip, hping3, iperf3, nstat, ping)
set -euo pipefail
cd "$(dirname "$0")/.."
rules=${1:-10000}
feed_lines=${2:-1000000}
rounds=${3:-3}
secs=${4:-3}
. benches/lib.sh
bench_setup

names=(none webserver webserver-nocounter webserver+feed nft-chain nft-set phantomc-optimized phantomc-unoptimized
  interleaved-optimized interleaved-unoptimized)
cleanup() {
  for f in "$work"/iperf-*.pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true; done
  bench_pairs_del
  ip netns del "$ns" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# Addresses the blocking rules hold: none of them is the client's.
awk -v n="$rules" 'BEGIN { for (i = 0; i < n; i++) printf "172.%d.%d.%d\n", 16 + int(i / 65536) % 16, int(i / 256) % 256, i % 256 }' > "$work/addrs"

# The webserver policy with LINES inserted after its blocklist rule (line 19),
# so new connections meet them before the rule that accepts them.
web_with() { sed "19r $1" policies/webserver.pf > "$2"; }

bench_feed_policy "$feed_lines"
sed 's/^/block in from /' "$work/addrs" > "$work/block.lines"
web_with "$work/block.lines" "$work/blocks.pf"
bench_interleaved "$rules" > "$work/interleaved.lines"
web_with "$work/interleaved.lines" "$work/interleaved.pf"

nft_head() {
  printf 'table inet hand\ndelete table inet hand\ntable inet hand {\n'
}
nft_chain() { # the rules of $1 between the usual first rules and the accepts
  printf '\tchain input {\n\t\ttype filter hook input priority filter; policy drop;\n'
  printf '\t\tiifname "lo" accept\n\t\tct state invalid drop\n\t\tct state established,related accept\n'
  cat "$1"
  printf '\t\ttcp dport { 80, 443 } ct state new accept\n\t\ticmp type echo-request accept\n\t}\n}\n'
}
{ nft_head; sed 's/^/\t\tip saddr /; s/$/ drop/' "$work/addrs" > "$work/chain.rules"; nft_chain "$work/chain.rules"; } > "$work/chain.nft"
{
  nft_head
  printf '\tset hand {\n\t\ttype ipv4_addr\n\t\tflags interval\n\t\telements = { '
  paste -sd, "$work/addrs"
  printf ' }\n\t}\n'
  echo '		ip saddr @hand drop' > "$work/set.rules"
  nft_chain "$work/set.rules"
} > "$work/set.nft"
"$bin" compile --no-optimize "$work/blocks.pf" > "$work/unoptimized.nft"
"$bin" compile --no-optimize "$work/interleaved.pf" > "$work/interleaved-unoptimized.nft"
# phantomc counts every rule by default; this copy of webserver.pf counts nothing.
"$bin" compile policies/webserver.pf | sed -E 's/\bcounter (packets [0-9]+ bytes [0-9]+ )?//' > "$work/nocounter.nft"

i=0
for name in "${names[@]}"; do
  p="pp$$-$i"
  bench_pair "$p"
  s=(ip netns exec "$p-s")
  case "$name" in
    none) ;;
    webserver) "${s[@]}" "$bin" apply policies/webserver.pf > /dev/null ;;
    webserver-nocounter) "${s[@]}" nft -f "$work/nocounter.nft" ;;
    webserver+feed)
      bench_load_feed "$p-s" "$work/state-$i"
      ;;
    nft-chain) "${s[@]}" nft -f "$work/chain.nft" ;;
    nft-set) "${s[@]}" nft -f "$work/set.nft" ;;
    phantomc-optimized) "${s[@]}" "$bin" apply "$work/blocks.pf" > /dev/null ;;
    phantomc-unoptimized) "${s[@]}" nft -f "$work/unoptimized.nft" ;;
    interleaved-optimized) "${s[@]}" "$bin" apply "$work/interleaved.pf" > /dev/null ;;
    interleaved-unoptimized) "${s[@]}" nft -f "$work/interleaved-unoptimized.nft" ;;
  esac
  "${s[@]}" iperf3 -s -p 80 -D --logfile /dev/null -I "$work/iperf-$i.pid"
  i=$((i + 1))
done
delivered() { ip netns exec "$1-s" nstat -asz IpInDelivers | awk '/IpInDelivers/ { print $2 }'; }

for round in $(seq "$rounds"); do
  for i in "${!names[@]}"; do
    p=${bench_pairs[$i]}
    before=$(delivered "$p")
    timeout "$secs" ip netns exec "$p-c" hping3 -q -S -p 443 --flood 198.51.100.1 > /dev/null 2>&1 || true
    after=$(delivered "$p")
    echo "$i conn $(( (after - before) / secs ))" >> "$work/results"
    bps=$(ip netns exec "$p-c" iperf3 -c 198.51.100.1 -p 80 -t "$secs" -J | python3 -c 'import json, sys; print(int(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]))')
    echo "$i bulk $bps" >> "$work/results"
    rtt=$(ip netns exec "$p-c" ping -q -c 10 -i 0.2 198.51.100.1 | awk -F/ '/^rtt/ { print $5 * 1000 }')
    echo "$i ping ${rtt:-0}" >> "$work/results"
  done
done

med() { awk -v i="$1" -v k="$2" '$1 == i && $2 == k { print $3 }' "$work/results" | median; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "-" }'; }
base_conn=$(med 0 conn); base_bulk=$(med 0 bulk); base_ping=$(med 0 ping)

echo
echo "packet path: $rules rules/addresses; median of $rounds interleaved rounds, $secs s each"
echo "feed: $feed_lines lines; feeds update said: $(echo "$feed_said" | tail -1)"
nft_rules() { grep -cP '^\t\t(?!elements)[a-z].* comment "' "$@"; }
echo "nft rules: webserver $(nft_rules <("$bin" compile policies/webserver.pf)); with $rules block lines: optimized $(nft_rules <("$bin" compile "$work/blocks.pf")), unoptimized $(nft_rules "$work/unoptimized.nft")"
# What a new connection walks: the rules of the input chain (a verdict map's per-line chains are entered only on a hit).
input_rules() { awk '/^\tchain input \{/ { on = 1; next } on && /^\t\}/ { on = 0 } on' "$@" | grep -cP '^\t\t(?!type )[a-z]'; }
echo "with $rules interleaved lines: optimized $(nft_rules <("$bin" compile "$work/interleaved.pf")) ($(input_rules <("$bin" compile "$work/interleaved.pf")) in the input chain), unoptimized $(nft_rules "$work/interleaved-unoptimized.nft"); $("$bin" compile --explain-optimize "$work/interleaved.pf" | tail -1)"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '| %-36s | %12s | %15s | %7s | %11s | %7s | %9s | %7s |\n' "ruleset" "new conn/s" "min-max" "ratio" "bulk Mbit/s" "ratio" "ping us" "ratio"
printf '|%s|%s|%s|%s|%s|%s|%s|%s|\n' "--------------------------------------" "--------------" "-----------------" "---------" "-------------" "---------" "-----------" "---------"
for i in "${!names[@]}"; do
  c=$(med "$i" conn); b=$(med "$i" bulk); l=$(med "$i" ping)
  spread=$(awk -v i="$i" '$1 == i && $2 == "conn" { print $3 }' "$work/results" | sort -n | sed -n '1p;$p' | paste -sd-)
  printf '| %-36s | %12s | %15s | %7s | %11s | %7s | %9s | %7s |\n' "${names[$i]}" "$c" "$spread" "$(ratio "$c" "$base_conn")" \
    "$(awk -v b="$b" 'BEGIN { printf "%.0f", b / 1e6 }')" "$(ratio "$b" "$base_bulk")" "$l" "$(ratio "$base_ping" "$l")"
done
# The feed's cost in each round (the two rows ran seconds apart, so a busy machine moves both).
per_round=$(awk '$2 == "conn" && ($1 == 1 || $1 == 3) { v[$1] = v[$1] " " $3 } END {
  n = split(v[1], w); split(v[3], f); for (r = 1; r <= n; r++) printf "%.3f\n", f[r] / w[r] }' "$work/results")
echo "webserver+feed / webserver new conn/s per round: $(echo "$per_round" | paste -sd' '); median $(echo "$per_round" | median)"
echo "min-max: the lowest and highest new conn/s of the rounds; ping ratio: no-ruleset round trip / this one (higher is better, like the others)"
