#!/usr/bin/env python3
# benches/flow_heavy_pcap.py SOURCE.pcap OUT.pcap BYTES: used by learn_bench.sh;
# prints "packets flows" of what it wrote (flows: TCP/UDP between two ports).
import struct, sys

# Repeat a small Ethernet/IPv4 pcap; copy k moves every flow's client (the
# higher port) to port + k and, past 64512 copies, to another address, fixing
# the checksums, and shifts time past the previous copy: each copy is new flows.
src, out, target = sys.argv[1], sys.argv[2], int(sys.argv[3])
data = open(src, "rb").read()
if data[:4] not in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") or struct.unpack_from("<I", data, 20)[0] != 1:
    sys.exit(f"{src}: need a little-endian Ethernet pcap")

def adjust(check, old, new):  # RFC 1624 incremental checksum update
    s = (~check & 0xFFFF) + (~old & 0xFFFF) + new
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF

template, records, flows = bytearray(), [], set()
off, first, last = 24, None, 0
while off + 16 <= len(data):
    sec, usec, caplen, _ = struct.unpack_from("<IIII", data, off)
    first = sec if first is None else first
    last = sec
    pos = len(template)
    template += data[off : off + 16 + caplen]
    frame, patch = pos + 16, None
    pkt = data[off + 16 : off + 16 + caplen]
    if len(pkt) >= 34 and pkt[12:14] == b"\x08\x00" and pkt[14] >> 4 == 4 and pkt[23] in (6, 17):
        l4 = 14 + (pkt[14] & 15) * 4
        check_at = l4 + (16 if pkt[23] == 6 else 6)
        if len(pkt) >= check_at + 2:
            sport, dport = struct.unpack_from(">HH", pkt, l4)
            if sport != dport:
                client = 0 if sport > dport else 1  # the ephemeral side
                flows.add((pkt[23], frozenset([(pkt[26:30], sport), (pkt[30:34], dport)])))
                patch = (frame + l4 + 2 * client, frame + 26 + 4 * client + 2, frame + 24,
                         frame + check_at, pkt[23] == 17, max(sport, dport))
    records.append((pos, sec, patch))
    off += 16 + caplen
shift = last - first + 1

with open(out, "wb") as f:
    f.write(data[:24])
    written, k = 24, 0
    while written < target:
        buf = bytearray(template)
        port_step, host_step = k % 64512, (k // 64512) % 256
        for pos, sec, patch in records:
            struct.pack_into("<I", buf, pos, sec + k * shift)
            if patch is None or k == 0:
                continue
            port_at, addr_at, ipcheck_at, check_at, udp, port = patch
            l4check = struct.unpack_from(">H", buf, check_at)[0]
            new_port = 1024 + (port - 1024 + port_step) % 64512
            struct.pack_into(">H", buf, port_at, new_port)
            new_check = adjust(l4check, port, new_port)
            if host_step:
                word = struct.unpack_from(">H", buf, addr_at)[0]
                new_word = word ^ (host_step << 8)
                struct.pack_into(">H", buf, addr_at, new_word)
                ipcheck = struct.unpack_from(">H", buf, ipcheck_at)[0]
                struct.pack_into(">H", buf, ipcheck_at, adjust(ipcheck, word, new_word))
                new_check = adjust(new_check, word, new_word)
            if not (udp and l4check == 0):  # UDP without a checksum keeps none
                struct.pack_into(">H", buf, check_at, new_check or (0xFFFF if udp else 0))
        f.write(buf)
        written += len(buf)
        k += 1
print(len(records) * k, len(flows) * k)
