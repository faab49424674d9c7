//! Addresses given to `POST /swarm/init` and `/swarm/join`, in Docker's
//! forms: `IP`, `IP:PORT`, `INTERFACE`, `INTERFACE:PORT` (port 2377 by
//! default), with Docker's rules for finding an address to advertise.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};

/// Docker's default swarm port.
pub const DEFAULT_PORT: u16 = 2377;

/// Splits `HOST[:PORT]`; the host may be an IP or an interface name.
fn split(s: &str, default_port: u16) -> Result<(String, u16), String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("invalid empty address".into());
    }
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Ok((sa.ip().to_string(), sa.port()));
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok((ip.to_string(), default_port));
    }
    match s.rsplit_once(':') {
        Some((h, p)) => {
            let port = p
                .parse::<u16>()
                .map_err(|_| format!("invalid port {p:?} in {s:?}"))?;
            let host = if h.is_empty() { "0.0.0.0" } else { h };
            Ok((host.to_string(), port))
        }
        None => Ok((s.to_string(), default_port)),
    }
}

/// The IPv4 addresses of this machine's interfaces: (interface, address).
fn interfaces() -> Vec<(String, Ipv4Addr)> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    addrs
        .filter_map(|a| {
            let ip = a.address.as_ref()?.as_sockaddr_in()?.ip();
            Some((a.interface_name, ip))
        })
        .collect()
}

/// An IP, or the first IPv4 address of the interface of that name.
fn host_ip(host: &str) -> Result<IpAddr, String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(ip);
    }
    interfaces()
        .into_iter()
        .find(|(name, _)| name == host)
        .map(|(_, ip)| IpAddr::V4(ip))
        .ok_or_else(|| {
            format!("failed to find an IP address for {host:?}: not an IP and no interface of that name has an IPv4 address")
        })
}

/// The address to listen on.
pub fn listen(s: &str) -> Result<SocketAddr, String> {
    let (host, port) =
        split(s, DEFAULT_PORT).map_err(|e| format!("invalid ListenAddr {s:?}: {e}"))?;
    let ip = host_ip(&host).map_err(|e| format!("invalid ListenAddr {s:?}: {e}"))?;
    Ok(SocketAddr::new(ip, port))
}

/// The address a new cluster's first manager advertises: the one given,
/// else the listen address when it is specific, else the machine's only
/// non-loopback IPv4 address.
pub fn advertise_init(advertise: &str, listen: SocketAddr) -> Result<SocketAddr, String> {
    if !advertise.trim().is_empty() {
        let (host, port) = split(advertise, listen.port())
            .map_err(|e| format!("invalid AdvertiseAddr {advertise:?}: {e}"))?;
        let ip = host_ip(&host).map_err(|e| format!("invalid AdvertiseAddr {advertise:?}: {e}"))?;
        if ip.is_unspecified() {
            return Err(format!(
                "advertise address must be a non-zero IP address (got {advertise:?})"
            ));
        }
        return Ok(SocketAddr::new(ip, port));
    }
    if !listen.ip().is_unspecified() {
        return Ok(listen);
    }
    let candidates: Vec<_> = interfaces()
        .into_iter()
        .filter(|(_, ip)| !ip.is_loopback())
        .collect();
    match candidates.as_slice() {
        [] => Err("could not find the system's IP address - specify one with --advertise-addr".into()),
        [(_, ip)] => Ok(SocketAddr::new(IpAddr::V4(*ip), listen.port())),
        [(n1, ip1), (n2, ip2), ..] => Err(format!(
            "could not choose an IP address to advertise since this system has multiple addresses on different interfaces ({ip1} on {n1} and {ip2} on {n2}) - specify one with --advertise-addr"
        )),
    }
}

/// The address a joining node advertises: the one given, else the listen
/// address when it is specific, else the local address of the route to the
/// manager.
pub fn advertise_join(
    advertise: &str,
    listen: SocketAddr,
    remote: SocketAddr,
) -> Result<SocketAddr, String> {
    if !advertise.trim().is_empty() || !listen.ip().is_unspecified() {
        return advertise_init(advertise, listen);
    }
    // Connecting a UDP socket sends nothing; it only picks the route.
    let local = UdpSocket::bind(SocketAddr::new(
        IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        0,
    ))
    .and_then(|s| {
        s.connect(remote)?;
        s.local_addr()
    })
    .map_err(|e| format!("could not find a local address to reach {remote}: {e} - specify one with --advertise-addr"))?;
    Ok(SocketAddr::new(local.ip(), listen.port()))
}

/// A manager address to join through (`IP[:PORT]`).
pub fn remote(s: &str) -> Result<SocketAddr, String> {
    let (host, port) =
        split(s, DEFAULT_PORT).map_err(|e| format!("invalid remoteAddr {s:?}: {e}"))?;
    let ip = host
        .parse::<IpAddr>()
        .map_err(|_| format!("invalid remoteAddr {s:?}: expected IP[:PORT] of a manager"))?;
    Ok(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        assert_eq!(
            listen("127.0.0.1:4000").unwrap().to_string(),
            "127.0.0.1:4000"
        );
        assert_eq!(listen("0.0.0.0").unwrap().to_string(), "0.0.0.0:2377");
        assert_eq!(listen("lo:4001").unwrap().to_string(), "127.0.0.1:4001");
        assert_eq!(listen(":4002").unwrap().to_string(), "0.0.0.0:4002");
        assert!(listen("").is_err());
        assert!(listen("127.0.0.1:notaport").is_err());
        assert!(listen("nosuchiface0").is_err());
        let l = listen("127.0.0.1:4000").unwrap();
        assert_eq!(advertise_init("", l).unwrap(), l);
        assert_eq!(
            advertise_init("127.0.0.2", l).unwrap().to_string(),
            "127.0.0.2:4000"
        );
        assert!(advertise_init("0.0.0.0", l).is_err());
        let any = listen("0.0.0.0:4000").unwrap();
        let r = remote("127.0.0.1:5000").unwrap();
        assert_eq!(
            advertise_join("", any, r).unwrap().to_string(),
            "127.0.0.1:4000"
        );
        assert_eq!(remote("127.0.0.1").unwrap().port(), 2377);
        assert!(remote("manager-host:2377").is_err());
    }
}
