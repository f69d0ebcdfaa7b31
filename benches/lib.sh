# Shared by the bench scripts (sourced): a release build, a work directory and
# a throwaway network namespace, both removed on exit, and median timing.

bench_setup() { # sets $bin, $work, $ns
  cargo build --release --quiet
  bin=$PWD/target/release/phantomc
  work=$(mktemp -d)
  ns="pcbench-$$"
  trap 'ip netns del "$ns" 2>/dev/null || true; rm -rf "$work"' EXIT
  ip netns add "$ns"
}

now() { date +%s%N; }
median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
ms() { awk -v ns="$1" 'BEGIN { printf "%.1f", ns / 1e6 }'; }

time_cmd() { # runs "$@" $runs times (output discarded), prints the median in ns
  for _ in $(seq "$runs"); do
    t0=$(now); "$@" > /dev/null 2>&1; t1=$(now); echo $((t1 - t0))
  done | median
}
