//! Captures written by hand, for traffic the shared corpus lacks.

/// A little-endian pcapng writer for captures the shared corpus lacks.
pub struct PcapNg(pub Vec<u8>);

impl PcapNg {
    pub fn block(&mut self, kind: u32, body: &[u8]) {
        let pad = (4 - body.len() % 4) % 4;
        let len = (12 + body.len() + pad) as u32;
        self.0.extend(kind.to_le_bytes());
        self.0.extend(len.to_le_bytes());
        self.0.extend(body);
        self.0.extend(std::iter::repeat_n(0u8, pad));
        self.0.extend(len.to_le_bytes());
    }

    pub fn section() -> PcapNg {
        let mut w = PcapNg(Vec::new());
        let mut body = 0x1A2B_3C4Du32.to_le_bytes().to_vec();
        body.extend(1u16.to_le_bytes());
        body.extend(0u16.to_le_bytes());
        body.extend((-1i64).to_le_bytes());
        w.block(0x0A0D_0D0A, &body);
        w
    }

    /// An interface; `tsresol` is the if_tsresol option (6 = microseconds).
    pub fn interface(&mut self, linktype: u16, snaplen: u32, tsresol: u8) {
        let mut body = linktype.to_le_bytes().to_vec();
        body.extend(0u16.to_le_bytes());
        body.extend(snaplen.to_le_bytes());
        body.extend([9, 0, 1, 0, tsresol, 0, 0, 0]); // if_tsresol
        body.extend([0, 0, 0, 0]); // opt_endofopt
        self.block(1, &body);
    }

    pub fn packet(&mut self, iface: u32, ts: u64, frame: &[u8], origlen: usize) {
        let mut body = iface.to_le_bytes().to_vec();
        body.extend(((ts >> 32) as u32).to_le_bytes());
        body.extend((ts as u32).to_le_bytes());
        body.extend((frame.len() as u32).to_le_bytes());
        body.extend((origlen as u32).to_le_bytes());
        body.extend(frame);
        self.block(6, &body);
    }
}

/// A TCP segment over IPv4 with `flags` (SYN, ACK, FIN, RST letters) and a payload.
pub fn segment(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, flags: &str, payload: &[u8]) -> Vec<u8> {
    let mut b = etherparse::PacketBuilder::ipv4(src, dst, 64).tcp(sport, dport, 1000, 64000);
    for flag in flags.chars() {
        b = match flag {
            'S' => b.syn(),
            'A' => b.ack(1),
            'F' => b.fin(),
            'R' => b.rst(),
            other => panic!("unknown TCP flag {other}"),
        };
    }
    let mut out = Vec::new();
    b.write(&mut out, payload).unwrap();
    out
}

/// TCP conversations over raw IP, 1 ms per packet within each; written
/// as a pcapng file in time order.
#[derive(Default)]
pub struct TcpCapture {
    packets: Vec<(u64, Vec<u8>)>,
}

impl TcpCapture {
    fn send(&mut self, at_us: u64, frame: Vec<u8>) {
        self.packets.push((at_us, frame));
    }

    /// A connection refused by the server (SYN, RST-ACK): a closed port.
    pub fn refused(&mut self, at_us: u64, client: ([u8; 4], u16), server: ([u8; 4], u16)) {
        self.send(at_us, segment(client.0, server.0, client.1, server.1, "S", &[]));
        self.send(at_us + 1000, segment(server.0, client.0, server.1, client.1, "RA", &[]));
    }

    /// A whole request and response: handshake, `request` bytes, `response`
    /// bytes, then both sides close.
    pub fn session(
        &mut self,
        at_us: u64,
        client: ([u8; 4], u16),
        server: ([u8; 4], u16),
        request: usize,
        response: usize,
    ) {
        let ((c, cp), (s, sp)) = (client, server);
        let steps = [
            segment(c, s, cp, sp, "S", &[]),
            segment(s, c, sp, cp, "SA", &[]),
            segment(c, s, cp, sp, "A", &vec![b'q'; request]),
            segment(s, c, sp, cp, "A", &vec![b'r'; response]),
            segment(c, s, cp, sp, "FA", &[]),
            segment(s, c, sp, cp, "FA", &[]),
            segment(c, s, cp, sp, "A", &[]),
        ];
        for (i, frame) in steps.into_iter().enumerate() {
            self.send(at_us + i as u64 * 1000, frame);
        }
    }

    pub fn write(mut self, path: &std::path::Path) {
        self.packets.sort_by_key(|(at, _)| *at);
        let mut w = PcapNg::section();
        w.interface(101, 65535, 6); // raw IP, microseconds
        for (at, frame) in &self.packets {
            w.packet(0, *at, frame, frame.len());
        }
        std::fs::write(path, &w.0).unwrap();
    }
}
