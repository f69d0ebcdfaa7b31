#!/usr/bin/env bash
# Throughput and peak memory of `phantomc learn` on a large capture (>= 1 GB,
# made by repeating a real capture with shifted timestamps), next to tcpdump
# and tshark reading the same file in the same run; then a flow-heavy capture
# of the same size (benches/flow_heavy_pcap.py: every copy of a small LAN
# capture gets new client ports, so about 4 packets per flow) next to tcpdump.
#
#   benches/learn_bench.sh [SIZE_MB=1000] [SOURCE=testdata/learn/formats/wireshark_samples-test.pcapng]
#   FLOW_SOURCE=testdata/learn/zeek/wikipedia.pcap (a little-endian Ethernet pcap)
#
# BEFORE=path/to/an/older/phantomc adds that binary's learn, run alternately
# with this one, and prints the time and memory ratios (the issue's 1.1x).
#
# Needs editcap, mergecap, capinfos (wireshark-common), tcpdump, tshark and
# GNU time (/usr/bin/time). The big file lives under /tmp and is removed.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MB=${1:-1000}
SOURCE=${2:-testdata/learn/formats/wireshark_samples-test.pcapng}
THREADS=${THREADS:-2}

for tool in editcap mergecap capinfos tcpdump tshark python3 /usr/bin/time; do
    command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install wireshark-common tshark tcpdump time)" >&2; exit 2; }
done
# BIN=path/to/phantomc measures that binary instead of building this tree.
if [ -z "${BIN:-}" ]; then
    cargo build --release --quiet
    BIN=target/release/phantomc
fi
WORK=$(mktemp -d /tmp/learn_bench.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

# Double the capture until it is large enough; each copy is shifted past the
# previous one in time so flows start afresh, as in a long real capture.
editcap -F pcap "$SOURCE" "$WORK/big.pcap"
shift=$(capinfos -u -M "$SOURCE" | awk '/Capture duration/ { printf "%d", $3 + 1 }')
while [ "$(stat -c %s "$WORK/big.pcap")" -lt $((SIZE_MB * 1000000)) ]; do
    editcap -t "$shift" "$WORK/big.pcap" "$WORK/shifted.pcap"
    mergecap -a -F pcap -w "$WORK/next.pcap" "$WORK/big.pcap" "$WORK/shifted.pcap"
    mv "$WORK/next.pcap" "$WORK/big.pcap"
    rm "$WORK/shifted.pcap"
    shift=$((shift * 2))
done
FILE="$WORK/big.pcap"
# A closed policy that every phantomc version reads (BEFORE may be older).
POLICY="$WORK/closed.pf"
printf 'table phantomc\npolicy input block\npass in on lo\npass in state { established, related }\n' >"$POLICY"
BYTES=$(stat -c %s "$FILE")
PACKETS=$(capinfos -c -M "$FILE" | awk '/Number of packets/ { print $4 }')
cat "$FILE" >/dev/null # warm the page cache so every tool reads from memory

# measure COMMAND...: "seconds peak_kB" from GNU time.
measure() {
    /usr/bin/time -v -o "$WORK/time" "$@" >/dev/null 2>"$WORK/stderr" || { echo "failed: $*" >&2; cat "$WORK/stderr" >&2; exit 1; }
    awk -F': ' '/Elapsed \(wall clock\)/ { n = split($2, t, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + t[i]; w = s }
                /Maximum resident set size/ { m = $2 } END { print w, m }' "$WORK/time"
}

# row NAME RUNS COMMAND...: median wall time of RUNS runs, highest peak RSS.
row() {
    local name=$1 runs=$2
    shift 2
    local results
    results=$(for _ in $(seq "$runs"); do measure "$@"; done | sort -n)
    local wall rss
    wall=$(echo "$results" | awk -v n="$runs" 'NR == int((n + 1) / 2) { print $1 }')
    LAST_WALL=$wall
    rss=$(echo "$results" | awk '$2 > m { m = $2 } END { print m }')
    LAST_RSS=$rss
    printf "| %-46s | %8.2f | %12.0f | %8.1f | %10.1f |\n" "$name" "$wall" "$(echo "$PACKETS / $wall" | bc -l)" \
        "$(echo "$BYTES / 1000000 / $wall" | bc -l)" "$(echo "$rss / 1024" | bc -l)"
}

RUNS=${RUNS:-3}
echo "capture: $(basename "$SOURCE") repeated to $((BYTES / 1000000)) MB, $PACKETS packets; $(nproc) cores, learn with $THREADS threads"
echo "median of $RUNS runs (tshark: 1 run); load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
printf "| %-46s | %8s | %12s | %8s | %10s |\n" tool seconds packets/s MB/s "peak MB"
printf "|%s|%s|%s|%s|%s|\n" "$(printf -- '-%.0s' {1..48})" "----------" "--------------" "----------" "------------"
row "phantomc learn (flows, detectors, proposal)" "$RUNS" env RAYON_NUM_THREADS="$THREADS" "$BIN" learn "$FILE" --policy "$POLICY"
LEARN_WALL=$LAST_WALL LEARN_RSS=$LAST_RSS
if [ -n "${BEFORE:-}" ]; then
    row "older phantomc learn (\$BEFORE, peer)" "$RUNS" env RAYON_NUM_THREADS="$THREADS" "$BEFORE" learn "$FILE" --policy "$POLICY"
    BEFORE_WALL=$LAST_WALL BEFORE_RSS=$LAST_RSS
    row "phantomc learn again (after the older one)" "$RUNS" env RAYON_NUM_THREADS="$THREADS" "$BIN" learn "$FILE" --policy "$POLICY"
    AGAIN_WALL=$LAST_WALL
fi
row "phantomc learn pinned to 1 core (taskset)" "$RUNS" taskset -c 0 env RAYON_NUM_THREADS=1 "$BIN" learn "$FILE" --policy "$POLICY"
row "tcpdump -nr FILE -w /dev/null (peer)" "$RUNS" tcpdump -nr "$FILE" -w /dev/null
TCPDUMP_WALL=$LAST_WALL
row "tshark -r FILE (peer)" 1 tshark -n -r "$FILE"
# The same packets as pcapng: learn reads pcapng through pcap-parser (no hand-written loop).
editcap -F pcapng "$FILE" "$WORK/big.pcapng"
cat "$WORK/big.pcapng" >/dev/null
BYTES=$(stat -c %s "$WORK/big.pcapng")
row "phantomc learn, same packets as pcapng" "$RUNS" env RAYON_NUM_THREADS="$THREADS" "$BIN" learn "$WORK/big.pcapng" --policy "$POLICY"
row "tcpdump -nr FILE.pcapng -w /dev/null (peer)" "$RUNS" tcpdump -nr "$WORK/big.pcapng" -w /dev/null
rm "$WORK/big.pcapng"
# Learn on the first half of the file: flat memory means the same peak.
editcap -F pcap -r "$FILE" "$WORK/half.pcap" 1-$((PACKETS / 2))
BYTES=$(stat -c %s "$WORK/half.pcap") PACKETS=$((PACKETS / 2))
row "phantomc learn, first half (flat memory check)" "$RUNS" env RAYON_NUM_THREADS="$THREADS" "$BIN" learn "$WORK/half.pcap" --policy "$POLICY"
rm "$WORK/half.pcap" "$FILE"
printf "learn takes %.2fx tcpdump's time (target: at most 0.60 on 2 cores)\n" "$(echo "$LEARN_WALL / $TCPDUMP_WALL" | bc -l)"

if [ -n "${BEFORE:-}" ]; then
    printf "learn vs the older binary: %.2fx and %.2fx its time (before and after it), %.2fx its peak memory (target: within 1.10)\n" \
        "$(echo "$LEARN_WALL / $BEFORE_WALL" | bc -l)" "$(echo "$AGAIN_WALL / $BEFORE_WALL" | bc -l)" "$(echo "$LEARN_RSS / $BEFORE_RSS" | bc -l)"
fi

# Flow-heavy: a browser's LAN capture (about 4 packets per flow) repeated to
# the same size, each copy's client ports moved (checksums fixed) and its time
# shifted past the previous copy, so every copy is new flows. Then peak memory
# of learn on the same capture made twice and four times as long.
FLOW_SOURCE=${FLOW_SOURCE:-testdata/learn/zeek/wikipedia.pcap}
FILE="$WORK/flows.pcap"
read -r PACKETS FLOWS < <(python3 benches/flow_heavy_pcap.py "$FLOW_SOURCE" "$FILE" $((SIZE_MB * 1000000)))
BYTES=$(stat -c %s "$FILE")
cat "$FILE" >/dev/null
echo
echo "flow-heavy: $(basename "$FLOW_SOURCE") with new client ports per copy, $((BYTES / 1000000)) MB, $PACKETS packets, $FLOWS TCP/UDP flows"
echo "median of $RUNS runs; load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
printf "| %-46s | %8s | %12s | %8s | %10s |\n" tool seconds packets/s MB/s "peak MB"
printf "|%s|%s|%s|%s|%s|\n" "$(printf -- '-%.0s' {1..48})" "----------" "--------------" "----------" "------------"
row "phantomc learn, flow-heavy" "$RUNS" env RAYON_NUM_THREADS="$THREADS" "$BIN" learn "$FILE" --policy "$POLICY"
FLOW_LEARN_WALL=$LAST_WALL
# mimalloc holds freed pages for a while (about half of learn's peak): the
# same run with that delay off shows the memory learn itself needs.
row "  same, MIMALLOC_PURGE_DELAY=0 (memory)" 1 env MIMALLOC_PURGE_DELAY=0 RAYON_NUM_THREADS="$THREADS" "$BIN" learn "$FILE" --policy "$POLICY"
if [ -n "${BEFORE:-}" ]; then
    row "older phantomc learn, flow-heavy (\$BEFORE)" "$RUNS" env RAYON_NUM_THREADS="$THREADS" "$BEFORE" learn "$FILE" --policy "$POLICY"
fi
row "phantomc learn, flow-heavy, pinned to 1 core" "$RUNS" taskset -c 0 env RAYON_NUM_THREADS=1 "$BIN" learn "$FILE" --policy "$POLICY"
row "tcpdump -nr FILE -w /dev/null (peer)" "$RUNS" tcpdump -nr "$FILE" -w /dev/null
FLOW_TCPDUMP_WALL=$LAST_WALL
editcap -F pcap -r "$FILE" "$WORK/half.pcap" 1-$((PACKETS / 2))
BYTES=$(stat -c %s "$WORK/half.pcap") PACKETS=$((PACKETS / 2))
row "phantomc learn, flow-heavy first half (memory)" "$RUNS" env RAYON_NUM_THREADS="$THREADS" "$BIN" learn "$WORK/half.pcap" --policy "$POLICY"
row "  same, MIMALLOC_PURGE_DELAY=0 (memory)" 1 env MIMALLOC_PURGE_DELAY=0 RAYON_NUM_THREADS="$THREADS" "$BIN" learn "$WORK/half.pcap" --policy "$POLICY"
rm "$WORK/half.pcap" "$FILE"
# Memory against closed flows: the same capture made 2x and 4x as long (one
# run each; peak memory varies little between runs).
for times in 2 4; do
    read -r PACKETS FLOWS < <(python3 benches/flow_heavy_pcap.py "$FLOW_SOURCE" "$FILE" $((times * SIZE_MB * 1000000)))
    BYTES=$(stat -c %s "$FILE")
    cat "$FILE" >/dev/null
    row "phantomc learn, flow-heavy ${times}x ($FLOWS flows)" 1 env RAYON_NUM_THREADS="$THREADS" "$BIN" learn "$FILE" --policy "$POLICY"
    row "  same, MIMALLOC_PURGE_DELAY=0 (memory)" 1 env MIMALLOC_PURGE_DELAY=0 RAYON_NUM_THREADS="$THREADS" "$BIN" learn "$FILE" --policy "$POLICY"
    if [ -n "${BEFORE:-}" ]; then
        row "older phantomc learn, flow-heavy ${times}x" 1 env RAYON_NUM_THREADS="$THREADS" "$BEFORE" learn "$FILE" --policy "$POLICY"
    fi
    rm "$FILE"
done
printf "flow-heavy: learn takes %.2fx tcpdump's time (target: at most 0.60 on 2 cores)\n" "$(echo "$FLOW_LEARN_WALL / $FLOW_TCPDUMP_WALL" | bc -l)"
