//! Test hosts in network namespaces the test makes itself, and removes when it ends (even on
//! failure). Nothing is sent outside them. Needs root; CI runs as root.

use std::net::Ipv4Addr;
use std::process::Command;

/// Runs `ip ARGS`, failing the test with its message if it fails.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Subnets 10.78.S.0/24 (S from 1), each a bridge inside one router namespace that forwards
/// between them: TCP crosses from subnet to subnet, broadcasts stay on their own.
pub struct Routed {
    pub router: String,
    /// For each host: its namespace, its address, and its subnet's broadcast address.
    pub hosts: Vec<(String, Ipv4Addr, Ipv4Addr)>,
    made: Vec<String>,
}

impl Routed {
    /// `per_subnet[i]` hosts on subnet `i + 1`.
    pub fn build(per_subnet: &[usize]) -> Routed {
        let prefix = format!("mvbr{}", std::process::id());
        let router = format!("{prefix}-r");
        let mut lab = Routed {
            router: router.clone(),
            hosts: Vec::new(),
            made: Vec::new(),
        };
        ip(&["netns", "add", &router]);
        lab.made.push(router.clone());
        ip(&["-n", &router, "link", "set", "lo", "up"]);
        for (i, hosts) in per_subnet.iter().enumerate() {
            let s = i as u8 + 1;
            let bridge = format!("br{s}");
            let gateway = format!("10.78.{s}.1");
            let broadcast = format!("10.78.{s}.255");
            ip(&["-n", &router, "link", "add", &bridge, "type", "bridge"]);
            ip(&[
                "-n",
                &router,
                "addr",
                "add",
                &format!("{gateway}/24"),
                "broadcast",
                &broadcast,
                "dev",
                &bridge,
            ]);
            ip(&["-n", &router, "link", "set", &bridge, "up"]);
            for h in 0..*hosts {
                let host = format!("{prefix}-s{s}h{h}");
                ip(&["netns", "add", &host]);
                lab.made.push(host.clone());
                let port = format!("v{s}x{h}");
                ip(&[
                    "-n", &router, "link", "add", &port, "type", "veth", "peer", "name", "eth0",
                    "netns", &host,
                ]);
                ip(&["-n", &router, "link", "set", &port, "master", &bridge, "up"]);
                let address = Ipv4Addr::new(10, 78, s, h as u8 + 2);
                ip(&[
                    "-n",
                    &host,
                    "addr",
                    "add",
                    &format!("{address}/24"),
                    "broadcast",
                    &broadcast,
                    "dev",
                    "eth0",
                ]);
                ip(&["-n", &host, "link", "set", "eth0", "up"]);
                ip(&["-n", &host, "link", "set", "lo", "up"]);
                ip(&["-n", &host, "route", "add", "default", "via", &gateway]);
                lab.hosts
                    .push((host, address, Ipv4Addr::new(10, 78, s, 255)));
            }
        }
        lab.forward(true);
        lab
    }

    /// Turns the router's forwarding on (`true`) or off: off, every subnet is cut off from the
    /// others, and connections across time out.
    pub fn forward(&self, on: bool) {
        let value = if on { "1" } else { "0" };
        let out = Command::new("ip")
            .args(["netns", "exec", &self.router, "sh", "-c"])
            .arg(format!("echo {value} > /proc/sys/net/ipv4/ip_forward"))
            .output()
            .expect("run ip netns exec");
        assert!(
            out.status.success(),
            "forwarding {value}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Routed {
    fn drop(&mut self) {
        for name in self.made.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}
