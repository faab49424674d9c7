//! Hosts in network namespaces, for partition tests: each host is a netns
//! with one interface cabled (veth) to a bridge in a "switch" netns of its
//! own, so the root namespace, its routes and its firewall are untouched.
//! Cutting a host's cable is a two-way partition: its packets are lost and
//! its TCP connections hang, as on a real network; a split moves some hosts
//! to a second bridge (two sides that each work). Everything is deleted
//! when the `Net` is dropped.

use std::cell::RefCell;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The switch and its hosts.
pub struct Net {
    prefix: String,
    hosts: RefCell<Vec<String>>,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Net {
    /// A switch, or why one cannot be made here (not root, no `ip`, no
    /// netns). Any other failure is a failure of the test.
    pub fn new() -> Result<Net, String> {
        // Unique per process and per net (tests run in parallel threads);
        // short: veth names are at most 15 bytes.
        static NETS: AtomicUsize = AtomicUsize::new(0);
        let n = NETS.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("sh{}{}", std::process::id() % 1_000_000, n % 100);
        let net = Net {
            prefix,
            hosts: RefCell::new(Vec::new()),
        };
        let sw = net.switch();
        if let Err(e) = ip(&["netns", "add", &sw]) {
            let unusable = ["ip: ", "Permission denied", "Operation not permitted"];
            if unusable.iter().any(|u| e.contains(u)) {
                return Err(e);
            }
            panic!("cannot make the switch namespace: {e}");
        }
        ip(&["-n", &sw, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &sw, "link", "set", "br0", "up"])?;
        Ok(net)
    }

    fn switch(&self) -> String {
        format!("{}s", self.prefix)
    }

    fn port(&self, n: usize) -> String {
        format!("v{}h{n}", self.prefix)
    }

    /// Adds a host: its netns name and IPv4 address.
    pub fn add_host(&self) -> (String, String) {
        let n = self.hosts.borrow().len() + 1;
        let ns = format!("{}h{n}", self.prefix);
        let addr = format!("10.201.0.{n}");
        let (sw, port) = (self.switch(), self.port(n));
        let made = (|| {
            ip(&["netns", "add", &ns])?;
            self.hosts.borrow_mut().push(ns.clone());
            ip(&[
                "link", "add", &port, "netns", &sw, "type", "veth", "peer", "name", "eth0",
                "netns", &ns,
            ])?;
            ip(&["-n", &sw, "link", "set", &port, "master", "br0", "up"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])
        })();
        if let Err(e) = made {
            panic!("cannot make host {ns}: {e}");
        }
        (ns, addr)
    }

    /// Splits the network in two: hosts `side` (1-based) are moved to a
    /// second bridge, so they reach each other but none of the rest.
    pub fn split(&self, side: &[usize]) {
        let sw = self.switch();
        if ip(&["-n", &sw, "link", "show", "br1"]).is_err() {
            ip(&["-n", &sw, "link", "add", "br1", "type", "bridge"]).unwrap();
            ip(&["-n", &sw, "link", "set", "br1", "up"]).unwrap();
        }
        for n in side {
            ip(&["-n", &sw, "link", "set", &self.port(*n), "master", "br1"]).unwrap();
        }
    }

    /// Ends a [`Net::split`]: every host back on the first bridge.
    pub fn unsplit(&self) {
        for n in 1..=self.hosts.borrow().len() {
            ip(&[
                "-n",
                &self.switch(),
                "link",
                "set",
                &self.port(n),
                "master",
                "br0",
            ])
            .unwrap();
        }
    }

    /// Cuts (`false`) or restores (`true`) host `n`'s cable (1-based, in the
    /// order the hosts were added).
    pub fn cable(&self, n: usize, connected: bool) {
        let state = if connected { "up" } else { "down" };
        ip(&["-n", &self.switch(), "link", "set", &self.port(n), state]).unwrap();
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in self.hosts.borrow().iter() {
            let _ = ip(&["netns", "del", ns]);
        }
        let _ = ip(&["netns", "del", &self.switch()]);
    }
}
