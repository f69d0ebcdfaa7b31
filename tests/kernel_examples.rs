//! Kernel tests of the bastion (per-source SSH rate limit) and router
//! (forwarding, masquerade, port forwarding) example policies.

mod common;

use common::*;

#[test]
fn bastion_limits_new_ssh_per_source_and_trusts_admins() {
    require_tools();
    let (srv, a, b, adm) = (Netns::new("bsrv"), Netns::new("ba"), Netns::new("bb"), Netns::new("badm"));
    link(&srv, "eth0", &a, "eth0");
    link(&srv, "eth1", &b, "eth0");
    link(&srv, "eth2", &adm, "eth0");
    srv.addr("eth0", "198.51.100.1/24");
    srv.addr("eth0", "2001:db8:1::1/64");
    srv.addr("eth1", "203.0.113.1/24");
    srv.addr("eth2", "10.10.0.1/24");
    a.addr("eth0", "198.51.100.2/24");
    a.addr("eth0", "2001:db8:1::2/64");
    b.addr("eth0", "203.0.113.2/24");
    adm.addr("eth0", "10.10.0.2/24");
    let _servers = Servers::start(&srv, &[22, 80], &[51820]);
    apply(&srv, "policies/bastion.pf");

    // burst 3: three new connections pass, the fourth from the same source drops.
    for i in 1..=3 {
        assert_eq!(tcp_connect(&a, "198.51.100.1", 22), Tcp::Connected, "attempt {i} within the burst");
    }
    assert_eq!(tcp_connect(&a, "198.51.100.1", 22), Tcp::TimedOut, "fourth attempt within a minute drops");
    // The limit is per source: another host and IPv6 have their own budgets.
    assert_eq!(tcp_connect(&b, "203.0.113.1", 22), Tcp::Connected, "another source is not limited");
    assert_eq!(tcp_connect(&a, "2001:db8:1::1", 22), Tcp::Connected, "the IPv6 address has its own budget");
    // Trusted networks are not limited at all.
    for i in 1..=6 {
        assert_eq!(tcp_connect(&adm, "10.10.0.1", 22), Tcp::Connected, "trusted attempt {i}");
    }
    assert!(udp_echo(&a, "198.51.100.1", 51820), "wireguard");
    assert_eq!(tcp_connect(&a, "198.51.100.1", 80), Tcp::TimedOut, "nothing else is open");
    assert!(ping(&a, "198.51.100.1"));
    assert!(ping(&a, "2001:db8:1::1"));
}

#[test]
fn router_forwards_nats_and_publishes_one_port() {
    require_tools();
    let (rtr, lan, wan) = (Netns::new("rtr"), Netns::new("lan"), Netns::new("wan"));
    link(&rtr, "eth0", &wan, "eth0");
    link(&rtr, "eth1", &lan, "eth0");
    rtr.addr("eth0", "203.0.113.1/24");
    rtr.addr("eth1", "192.168.50.1/24");
    wan.addr("eth0", "203.0.113.2/24");
    wan.addr("eth0", "203.0.113.66/24"); // a "bad host" of router-hosts.pf
    lan.addr("eth0", "192.168.50.10/24");
    lan.route(&["default", "via", "192.168.50.1"]);
    // The internet side knows no private routes, except for the direct test below.
    wan.route(&["192.168.50.0/24", "via", "203.0.113.1"]);
    rtr.sysctl("net.ipv4.ip_forward=1");

    let lan_srv = Servers::start(&lan, &[22, 80], &[]);
    let wan_srv = Servers::start(&wan, &[80], &[]);
    let _rtr_srv = Servers::start(&rtr, &[22], &[53]);
    // Before the policy, the internet reaches the LAN directly.
    assert_eq!(tcp_connect(&wan, "192.168.50.10", 22), Tcp::Connected);
    apply(&rtr, "policies/router.pf");

    // Outbound from the LAN, masqueraded behind the router's WAN address.
    wan_srv.peers.lock().expect("peers").clear();
    assert_eq!(tcp_connect(&lan, "203.0.113.2", 80), Tcp::Connected, "LAN to internet");
    let seen = wan_srv.peers.lock().expect("peers").clone();
    assert_eq!(seen, vec!["203.0.113.1".parse::<std::net::IpAddr>().expect("ip")], "source was masqueraded");
    assert_eq!(tcp_connect(&lan, "203.0.113.66", 80), Tcp::TimedOut, "bad host blocked");

    // Published port: WAN 8080 -> 192.168.50.10:80.
    lan_srv.peers.lock().expect("peers").clear();
    assert_eq!(tcp_connect(&wan, "203.0.113.1", 8080), Tcp::Connected, "port forward");
    assert_eq!(lan_srv.peers.lock().expect("peers").len(), 1, "the LAN server took the connection");
    assert_eq!(tcp_connect(&wan, "192.168.50.10", 80), Tcp::Connected, "the web server itself is reachable on 80");
    assert_eq!(tcp_connect(&wan, "192.168.50.10", 22), Tcp::TimedOut, "but nothing else on the LAN");

    // The router itself.
    assert_eq!(tcp_connect(&lan, "192.168.50.1", 22), Tcp::Connected, "ssh from the LAN");
    assert_eq!(tcp_connect(&wan, "203.0.113.1", 22), Tcp::TimedOut, "no ssh from the internet");
    assert!(udp_echo(&lan, "192.168.50.1", 53), "DNS from the LAN");
    assert!(!udp_echo(&wan, "203.0.113.1", 53), "no DNS for the internet");
    assert!(ping(&wan, "203.0.113.1"), "ping the router");
}

#[test]
fn feed_blocklist_example_drops_listed_sources_offline() {
    let lab = web_lab();
    let _servers = Servers::start(&lab.srv, &[22, 80], &[]);
    let state = tempfile::tempdir().expect("tempdir");
    let state = state.path().to_str().expect("path");
    let policy = "policies/feed-blocklist.pf";
    // The feed's source is a file in testdata: no network needed.
    let out = lab.srv.phantomc(&["feeds", "update", policy, "--state-dir", state]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let out = lab.srv.phantomc(&["apply", policy, "--state-dir", state]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let v6 = feed_set(&lab.srv, "attackers_v6");
    assert!(v6.contains("2001:db8:bad::/48"), "{v6}");

    let (p, a) = (&lab.publ, &lab.adm);
    assert_eq!(tcp_connect(p, "198.51.100.1", 80), Tcp::TimedOut, "198.51.100.2 is listed: dropped");
    assert_eq!(tcp_connect(p, "2001:db8:1::1", 80), Tcp::Connected, "its IPv6 address is not listed");
    assert_eq!(tcp_connect(a, "10.10.0.1", 22), Tcp::Connected, "ssh from the admin network");
    assert_eq!(tcp_connect(p, "2001:db8:1::1", 22), Tcp::TimedOut, "no ssh from elsewhere");
    // The same policy's offline tests pass against what was applied.
    let out = lab.srv.phantomc(&["test", policy]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
}
