#!/usr/bin/env bash
# Benchmark: reload latency of `phantomc watch` (file saved -> new rule
# visible in the kernel), next to loading the same ruleset directly with
# `nft -f` and with a one-shot `phantomc apply`, in one run, inside a
# throwaway netns.
# Usage: benches/watch_reload.sh [SAVES] [DEBOUNCE_MS]   (root; needs nft and ip)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PCWATCH_NS:-}" ]; then
  # Outside: build, make the namespace, and run this script again inside it,
  # so that no step pays for `ip netns exec`.
  cargo build --release --quiet
  ns="pcwatch-$$"
  ip netns add "$ns"
  trap 'ip netns del "$ns"' EXIT
  PCWATCH_NS=$ns ip netns exec "$ns" "$0" "$@"
  exit
fi

saves=${1:-50}
debounce=${2:-50}
bin=target/release/phantomc
work=$(mktemp -d)
watch_pid=
cleanup() {
  if [ -n "$watch_pid" ]; then kill "$watch_pid"; wait "$watch_pid" || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

now() { date +%s%N; }
median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
pct() { sort -n | awk -v p="$1" '{ a[NR] = $1 } END { r = int(p / 100 * NR + 0.999); if (r < 1) r = 1; print a[r] }'; }
ms() { awk -v ns="$1" 'BEGIN { printf "%.1f", ns / 1e6 }'; }
time_cmd() { # runs "$@" 10 times, prints the median in ns
  for _ in $(seq 10); do
    t0=$(now); "$@" > /dev/null; t1=$(now); echo $((t1 - t0))
  done | median
}

# webserver.pf plus one rule whose label changes with every save.
policy() { cat policies/webserver.pf; echo "pass in proto tcp to port $((9000 + $1 % 2)) label \"gen-$1\""; }
policy 0 > "$work/policy.pf"
"$bin" compile "$work/policy.pf" > "$work/policy.nft"
nrules=$(grep -c 'comment "policy.pf' "$work/policy.nft")
nft_f=$(time_cmd nft -f "$work/policy.nft")
apply=$(time_cmd "$bin" apply "$work/policy.pf")

"$bin" watch "$work/policy.pf" --state-file "$work/health.json" --debounce-ms "$debounce" -q &
watch_pid=$!
until grep -qs '"reloads": 1,' "$work/health.json"; do sleep 0.05; done
latencies=$(for i in $(seq 1 "$saves"); do
  policy "$i" > "$work/policy.pf.new"
  t0=$(now); mv "$work/policy.pf.new" "$work/policy.pf"
  until nft list chain inet phantomc input | grep -q "gen-$i\""; do sleep 0.002; done
  echo $(($(now) - t0))
done)

echo "policy: webserver.pf + 1 toggled rule ($nrules nft rules); $saves saves by rename; watch --debounce-ms $debounce"
printf '| %-52s | %10s |\n' "step" "ms"
printf '|%s|%s|\n' "------------------------------------------------------" "------------"
row() { printf '| %-52s | %10s |\n' "$1" "$(ms "$2")"; }
row "nft -f policy.nft (peer: load the script; median)" "$nft_f"
row "phantomc apply (compile+check+load+verify; median)" "$apply"
row "phantomc watch: save -> live, p50" "$(echo "$latencies" | pct 50)"
row "phantomc watch: save -> live, p99" "$(echo "$latencies" | pct 99)"
row "phantomc watch: save -> live, max" "$(echo "$latencies" | pct 100)"
