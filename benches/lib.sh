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

bench_pair() { # P: namespaces P-s (server, 198.51.100.1 on s0) and P-c (client,
  # 198.51.100.2 on c0) joined by a veth pair, listed in bench_pairs for bench_pairs_del
  bench_pairs+=("$1")
  ip netns add "$1-s"
  ip netns add "$1-c"
  ip link add s0 netns "$1-s" type veth peer name c0 netns "$1-c"
  ip -n "$1-s" addr add 198.51.100.1/24 dev s0
  ip -n "$1-c" addr add 198.51.100.2/24 dev c0
  for n in "$1-s" "$1-c"; do ip -n "$n" link set lo up; done
  ip -n "$1-s" link set s0 up
  ip -n "$1-c" link set c0 up
  # A SYN flood fills conntrack with entries that never get an answer: let them go at once.
  ip netns exec "$1-s" sh -c 'for t in syn_recv syn_sent close; do echo 1 > /proc/sys/net/netfilter/nf_conntrack_tcp_timeout_$t 2>/dev/null || true; done' || true
}

bench_pairs=()
bench_pairs_del() {
  for p in "${bench_pairs[@]}"; do ip netns del "$p-s" 2>/dev/null || true; ip netns del "$p-c" 2>/dev/null || true; done
}

bench_feed_policy() { # LINES: $work/feed.txt, a bench_feed without the pair's
  # addresses (198.x), 10.x and loopback, and $work/feed.pf, webserver.pf
  # blocking it after its blocklist rule (line 19), before the accepting rules
  bench_feed "$1" 198 10 127 > "$work/feed.txt"
  printf 'block in from <bench>\n' > "$work/feed.lines"
  sed "19r $work/feed.lines" policies/webserver.pf > "$work/feed.pf"
  bench_feed_decl >> "$work/feed.pf"
}

bench_feed_decl() { # the feed `bench` read from feed.txt beside the policy,
  # with bounds loose enough for a million-line bench feed
  printf 'feed bench {\n    source "feed.txt"\n    max-entries 2000000\n    max-shrink 100\n    max-coverage "/1"\n}\n'
}

bench_load_feed() { # NETNS STATE-DIR: applies $work/feed.pf there and fills its
  # feed set; sets $feed_said to what `feeds update` said
  ip netns exec "$1" "$bin" apply "$work/feed.pf" --state-dir "$2" > /dev/null 2>&1 || true
  feed_said=$(ip netns exec "$1" "$bin" feeds update "$work/feed.pf" --state-dir "$2" 2>&1)
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
