#!/usr/bin/env bash
# Precision, recall and false positives of `phantomc learn` on labelled
# captures, per capture and in total, side by side with an IsolationForest
# over per-source features (the approach phantomc replaces; scikit-learn in a
# venv this script makes) and with Zeek where a Zeek btest baseline exists.
#
#   sudo benches/learn_quality.sh          # includes the namespace lab capture (root, ~1 min)
#   LAB=0 benches/learn_quality.sh         # public captures only
#
# Captures and labels: testdata/learn/scans (NCSA scan traces, Zeek notices
# next to them), testdata/learn/zeek (Zeek btest SSH/FTP brute force, an nmap
# version scan and benign traces, see its README), the office capture in testdata/learn/formats
# (no attack), and the LAN lab of tests/learn_lab.rs (12 attackers).
# "Flagged by phantomc" means proposed for blocking in the learned policy.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
BIN=target/release/phantomc
WORK=$(mktemp -d /tmp/learn_quality.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

VENV=target/learn-quality/venv
if ! "$VENV/bin/python" -c 'import sklearn' 2>/dev/null; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet scikit-learn
fi

printf 'table phantomc\npolicy input block\npass in on lo\npass in state { established, related }\n' >"$WORK/closed.pf"

# capture NAME FILE ATTACKERS ZEEK [--host ADDR]: learn, keep its flows and
# the sources it proposes to block, add a manifest line.
capture() {
    local name=$1 file=$2 attackers=$3 zeek=$4
    shift 4
    "$BIN" learn "$file" --policy "$WORK/closed.pf" --dump-flows "$WORK/$name.jsonl" "$@" >"$WORK/$name.diff" 2>"$WORK/$name.err" || {
        cat "$WORK/$name.err" >&2
        exit 1
    }
    local blocked
    blocked=$(sed -n 's/^+    \([0-9a-fA-F:.]*\)\( expires [0-9-]*\)\{0,1\},$/\1/p' "$WORK/$name.diff" | paste -sd, -)
    printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$WORK/$name.jsonl" "$attackers" "$blocked" "$zeek" >>"$WORK/manifest.tsv"
}

S=testdata/learn/scans
Z=testdata/learn/zeek
capture 445_scan "$S/445_scan.pcap" 176.192.150.3 176.192.150.3
capture multiport_scan "$S/multiport_scan.pcap" 125.27.226.209 125.27.226.209
capture port_scan "$S/port_scan.pcap" 192.168.2.154 192.168.2.154
capture scan_with_zero_windows "$S/scan_with_zero_windows.pcap" 10.0.0.1 10.0.0.1
capture backscatter "$S/backscatter.trace" "" ""
capture zeek_sshguess "$Z/ssh-sshguess.pcap" 192.168.56.1 192.168.56.1
capture zeek_ftp_bruteforce "$Z/ftp-bruteforce.pcap" 192.168.56.1 192.168.56.1
capture zeek_ssh_benign "$Z/ssh-ssh.pcap" "" -
capture zeek_ssh_single "$Z/ssh-single-conn.pcap" "" -
capture zeek_ftp_benign "$Z/ftp-ipv4.pcap" "" - --host 199.233.217.249
# Zeek's nmap version scan of a /24 (port 80), and protocol test traces with
# no attack in them (DNS, web, SMTP, DCE-RPC, IGMP, neighbour discovery, ESP).
capture zeek_nmap_vsn "$Z/nmap-vsn.pcap" 192.168.1.71 -
for benign in dns-edns-ecs cisco-fabric-path igmp-many-sources igmp-many-groups icmp6-nd-options ip6-esp wikipedia smtp dce-rpc-mapi; do
    capture "zeek_$benign" "$Z/$benign.pcap" "" -
done
capture office "testdata/learn/formats/wireshark_samples-test.pcapng" "" -

if [ "${LAB:-1}" = 1 ]; then
    # The lab test records its capture here when asked (root: namespaces).
    PHANTOMC_LAB_KEEP=$WORK cargo test --release --quiet --test learn_lab >"$WORK/lab.log" 2>&1 || {
        tail -50 "$WORK/lab.log" >&2
        exit 1
    }
    capture lab "$WORK/lab.pcap" "$(seq -s, -f '10.77.0.%g' 101 112)" -
fi

"$VENV/bin/python" benches/learn_quality.py "$WORK/manifest.tsv"
