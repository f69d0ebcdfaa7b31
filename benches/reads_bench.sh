#!/usr/bin/env bash
# Benchmark: the reads that must not grow with a feed, with a policy whose
# feed set holds ~830k entries (a generated 1,000,000-line feed), inside a
# throwaway netns: `status` (the exact drift check), `apply --dry-run`, the
# `apply --confirm` rollback record and its restore, and every read endpoint
# of the API (cold and warm, and the dashboard's three polls at once), next
# to the peer `nft list table inet phantomc` (what these reads did before)
# and `nft -f` of the same table (the restore's floor), in the same run.
# Usage: benches/reads_bench.sh [LINES] [RUNS]   (root; needs nft, ip, curl)
set -euo pipefail
cd "$(dirname "$0")/.."
lines=${1:-1000000}
runs=${2:-3}
. benches/lib.sh
bench_setup
port=9197

bench_feed "$lines" > "$work/feed.txt"
cat > "$work/bench.pf" <<EOF
table phantomc
$(bench_feed_decl)
set blocklist dynamic timeout 1d
# The lockout guard refuses a policy that cuts loopback and SSH.
pass in on lo
pass in proto tcp to port 22
block in from <bench>
block in from <blocklist>
pass in proto tcp to port { 80, 443 }
EOF
state="$work/state"
in_ns() { ip netns exec "$ns" "$@"; }
in_ns ip link set lo up
in_ns "$bin" apply "$work/bench.pf" --state-dir "$state" > /dev/null 2>&1
in_ns "$bin" feeds update "$work/bench.pf" --state-dir "$state" > "$work/update.log" 2>&1
in_ns "$bin" block 192.0.2.7 --timeout 1h --reason bench > /dev/null
in_ns "$bin" block 198.51.100.0/24 --timeout 2h > /dev/null

rows=()
row() { rows+=("$(printf '| %-62s | %10s |' "$1" "$2")"); }
row "phantomc status (exact drift check over netlink)" "$(ms "$(time_cmd in_ns "$bin" status "$work/bench.pf")")"
row "phantomc status --format json" "$(ms "$(time_cmd in_ns "$bin" status "$work/bench.pf" --format json)")"
row "phantomc apply --dry-run" "$(ms "$(time_cmd in_ns "$bin" apply --dry-run "$work/bench.pf" --state-dir "$state")")"

# The confirm record and its restore, as apply --confirm reports them.
for _ in $(seq "$runs"); do
  PHANTOMC_RUN_DIR="$work/run" in_ns "$bin" apply --confirm --timeout 1s "$work/bench.pf" --state-dir "$state" < /dev/null 2>/dev/null || true
done > "$work/confirm.log"
record=$(sed -n 's/^recorded .* in \([0-9]*\) ms.*/\1/p' "$work/confirm.log" | median)
restore=$(sed -n 's/.*restored in \([0-9]*\) ms.*/\1/p' "$work/confirm.log" | median)
row "apply --confirm: record of the previous table (netlink)" "$record"
row "apply --confirm: rollback restore (one netlink batch)" "$restore"

# The API, standalone, on the namespace's loopback.
# Not through in_ns: $! must be the service itself (ip netns exec execs it).
ip netns exec "$ns" "$bin" serve "$work/bench.pf" --listen "127.0.0.1:$port" --state-dir "$state" \
  --state-file "$work/no-watcher.json" > "$work/serve.log" 2>&1 &
serve_pid=$!
trap 'kill "$serve_pid" 2>/dev/null || true; ip netns del "$ns" 2>/dev/null || true; rm -rf "$work"' EXIT
until in_ns curl -s -o /dev/null "127.0.0.1:$port/api/v1/status"; do sleep 0.2; done
get() { in_ns curl -sf -o /dev/null "127.0.0.1:$port$1"; }
for path in /api/v1/status /api/v1/rules /api/v1/threats /api/v1/proposals /api/v1/alerts /metrics; do
  row "GET $path" "$(ms "$(time_cmd get "$path")")"
done
polls() { # what an open dashboard asks every 5 s, at once
  get /api/v1/status & get /api/v1/rules & get /api/v1/threats & wait
}
row "dashboard poll: status + rules + threats at once" "$(ms "$(time_cmd polls)")"
reads=$(in_ns curl -s "127.0.0.1:$port/metrics" | grep '^phantomc_kernel_reads_total' | tr '\n' ' ')

# Peers: what these reads cost when they listed the table (once: a listing
# of an 800k-entry set takes most of a minute), and nft -f of the same table.
runs_before=$runs
runs=1
row "nft list table inet phantomc (peer: the listing they replaced)" "$(ms "$(time_cmd in_ns nft list table inet phantomc)")"
{
  echo "add table inet phantomc"
  echo "delete table inet phantomc"
  in_ns nft list table inet phantomc
} > "$work/table.nft"
row "nft -f of the same table (peer: the restore's floor)" "$(ms "$(time_cmd in_ns nft -f "$work/table.nft")")"
runs=$runs_before

elements=$(sed -n 's/.*(\([0-9]*\) + [0-9]* elements.*/\1/p' "$work/update.log")
echo
echo "feed: $lines lines -> $elements networks in the sets of feed bench; 2 run-time entries; median of $runs runs (peers: 1)"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '| %-62s | %10s |\n' "read" "ms"
printf '|%s|%s|\n' "----------------------------------------------------------------" "------------"
printf '%s\n' "${rows[@]}"
echo "record said: $(grep -m1 '^recorded' "$work/confirm.log")"
echo "rollback said: $(grep -m1 'not confirmed' "$work/confirm.log")"
echo "service reads: $reads"
echo "status said: $(in_ns "$bin" status "$work/bench.pf" | head -1)"
