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

bench_feed() { # N [FIRST-OCTETS...]: a FireHOL-like feed of N lines on stdout: mostly
  # single hosts, some /24../16 networks (which overlap hosts), a comment. Networks
  # whose first octet is listed move to 11.x (keeps a bench's own addresses out);
  # 127.x always does, so a feed never trips the loopback protection.
  awk -v n="$1" -v avoid="${*:2}" 'BEGIN {
    srand(42)
    split(avoid, skip, " "); for (j in skip) skipped[skip[j]] = 1
    skipped[127] = 1
    print "# generated feed for the benches"
    for (i = 0; i < n; i++) {
      a = 1 + int(rand() * 222); b = int(rand() * 256); c = int(rand() * 256); d = int(rand() * 256)
      if (a in skipped) a = 11
      k = rand()
      if (k < 0.90) printf "%d.%d.%d.%d\n", a, b, c, d
      else if (k < 0.97) printf "%d.%d.%d.0/24\n", a, b, c
      else if (k < 0.99) printf "%d.%d.%d.0/22\n", a, b, c - c % 4
      else printf "%d.%d.0.0/16\n", a, b
    }
  }'
}

bench_interleaved() { # N: N policy lines of five interleaved shapes (no two adjacent
  # lines share one): per-network ssh grants, udp blocks, v6 grants with a limit,
  # logged rejects, per-interface udp ports. compile_apply.sh's policy body.
  awk -v n="$1" 'BEGIN {
    for (i = 0; i < n; i++) {
      a = int(i / 250) % 250; b = i % 250
      k = i % 5
      if (k == 0) printf "pass in proto tcp from 10.%d.%d.0/24 to port %d state new\n", a, b, 1000 + i % 60000
      else if (k == 1) printf "block in proto udp from 172.16.%d.%d to port { 53, 123, %d }\n", a, b, 2000 + i % 50000
      else if (k == 2) printf "pass in proto tcp from fd00:%x:%x::/48 to port 22 limit 10/minute\n", a, b
      else if (k == 3) printf "reject in proto tcp from 192.168.%d.%d to port 1000-2000 log\n", a, b
      else printf "pass in on eth%d proto udp to port %d counter\n", i % 4, 3000 + i % 60000
    }
  }'
}
