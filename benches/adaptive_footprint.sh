#!/usr/bin/env bash
# Footprint of `phantomc watch` in adaptive mode (observe): RSS and CPU at
# idle and while a client namespace opens new TCP connections to a server
# namespace at 1,000 and 10,000 per second (each closed with a reset, so no
# TIME_WAIT runs out of ports). The peer, measured in the same run, is
# `conntrack -E` following the same events into /dev/null.
# Usage: benches/adaptive_footprint.sh [SECONDS_PER_ROW=10] [RATES="0 1000 10000"]
#   (root; needs ip, nft, conntrack and python3)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
rates=${2:-"0 1000 10000"}
cargo build --release --quiet
bin=$PWD/target/release/phantomc
work=$(mktemp -d)
srv="pcfoot-srv-$$" cli="pcfoot-cli-$$"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  ip netns del "$srv" 2>/dev/null || true
  ip netns del "$cli" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
ip netns add "$srv"; ip netns add "$cli"
ip -n "$srv" link set lo up; ip -n "$cli" link set lo up
ip link add "fs$$" netns "$srv" type veth peer name "fc$$" netns "$cli"
ip -n "$srv" addr add 10.99.0.1/24 dev "fs$$"; ip -n "$srv" link set "fs$$" up
ip -n "$cli" addr add 10.99.0.2/24 dev "fc$$"; ip -n "$cli" link set "fc$$" up

cat > "$work/policy.pf" <<'POL'
table phantomc
set attackers dynamic
policy input block
pass in on lo
block in from <attackers>
pass in state { established, related }
pass in proto tcp to port 80 state new
adaptive { mode observe; set attackers; }
POL
cat > "$work/server.py" <<'PY'
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("10.99.0.1", 80)); s.listen(4096)
while True:
    c, _ = s.accept(); c.close()
PY
cat > "$work/client.py" <<'PY'
import socket, struct, sys, time
rate, secs = int(sys.argv[1]), float(sys.argv[2])
linger = struct.pack("ii", 1, 0)
done, start = 0, time.monotonic()
while True:
    now = time.monotonic() - start
    if now >= secs: break
    if done >= rate * now:
        time.sleep(0.0005); continue
    c = socket.socket(); c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
    try: c.connect(("10.99.0.1", 80)); done += 1
    except OSError: pass
    c.close()
print(done / secs)
PY

ip netns exec "$srv" python3 "$work/server.py" & pids+=($!)
ip netns exec "$srv" "$bin" watch "$work/policy.pf" --state-file "$work/health.json" --state-dir "$work/state" -q & pids+=($!)
watch_pid=$!
ip netns exec "$srv" conntrack -E > /dev/null 2>&1 & pids+=($!)
peer_pid=$!
sleep 2
# ip netns exec execs its command: the pids are the measured processes.
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
rss_mb() { awk '/^VmRSS/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }
hz=$(getconf CLK_TCK)
printf '%-12s %-12s %-14s %-10s %-16s %-10s\n' "target/s" "achieved/s" "watch CPU %" "watch MB" "conntrack -E CPU %" "peer MB"
for rate in $rates; do
  w0=$(ticks "$watch_pid"); p0=$(ticks "$peer_pid")
  if [ "$rate" -eq 0 ]; then sleep "$secs"; got=0
  else got=$(ip netns exec "$cli" python3 "$work/client.py" "$rate" "$secs"); fi
  w1=$(ticks "$watch_pid"); p1=$(ticks "$peer_pid")
  awk -v r="$rate" -v g="$got" -v w=$((w1 - w0)) -v p=$((p1 - p0)) -v hz="$hz" -v s="$secs" \
      -v wm="$(rss_mb "$watch_pid")" -v pm="$(rss_mb "$peer_pid")" \
      'BEGIN { printf "%-12d %-12.0f %-14.1f %-10s %-16.1f %-10s\n", r, g, 100 * w / hz / s, wm, 100 * p / hz / s, pm }'
done
echo "adaptive status: $(tr -d '\n ' < "$work/state/adaptive/status.json" | cut -c1-200)"
