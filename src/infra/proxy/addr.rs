//! Where an allowed host *name* may lead: only to global unicast addresses that are not the
//! host's own. An owner who lists a name means a service on the internet; DNS that points the
//! name at the private network, the host, the container runtime's bridge or cloud metadata must
//! not turn the allowlist into a way in. An IP literal the owner listed is the exception: that is
//! an explicit choice, checked by the allowlist, not here.
//!
//! The name is resolved once, every address is checked, and the caller connects only to the
//! addresses returned here, so a second lookup cannot answer differently (DNS rebinding).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};

/// Whether `ip` is a global unicast address: not loopback, unspecified, private (RFC 1918),
/// shared (CGNAT 100.64/10), link-local, `0/8`, IETF protocol assignments (192.0.0/24),
/// documentation, benchmarking (198.18/15), 6to4 relay anycast, multicast, broadcast or reserved
/// (240/4); for IPv6 only `2000::/3` counts, minus documentation (`2001:db8::/32`, `3fff::/20`),
/// Teredo (`2001::/32`), benchmarking and ORCHID (`2001:2::/48`, `2001:10::/28`,
/// `2001:20::/28`); forms that embed an IPv4 address (mapped `::ffff:0:0/96`, compatible
/// `::/96`, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`) are judged by that address.
pub fn is_global_unicast(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_global_v4(v4),
        IpAddr::V6(v6) => is_global_v6(v6),
    }
}

fn is_global_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    let refused = a == 0
        || a == 10
        || a == 127
        || (a == 100 && (b & 0xc0) == 64)
        || (a == 169 && b == 254)
        || (a == 172 && (b & 0xf0) == 16)
        || (a == 192 && b == 0 && c == 0)
        || (a == 192 && b == 0 && c == 2)
        || (a == 192 && b == 88 && c == 99)
        || (a == 192 && b == 168)
        || (a == 198 && (b & 0xfe) == 18)
        || (a == 198 && b == 51 && c == 100)
        || (a == 203 && b == 0 && c == 113)
        || a >= 224;
    !refused
}

fn is_global_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    if let Some(v4) = embedded_v4(ip) {
        return is_global_v4(v4);
    }
    // Only 2000::/3 is allocated for global unicast; everything else (ULA fc00::/7, link-local
    // fe80::/10, site-local, multicast ff00::/8, discard 100::/64, loopback, …) is not.
    if (s[0] & 0xe000) != 0x2000 {
        return false;
    }
    let refused = (s[0] == 0x2001 && s[1] == 0x0db8)
        || (s[0] & 0xfff0) == 0x3ff0
        || (s[0] == 0x2001 && s[1] == 0)
        || (s[0] == 0x2001 && s[1] == 2 && s[2] == 0)
        || (s[0] == 0x2001 && (s[1] & 0xfff0) == 0x10)
        || (s[0] == 0x2001 && (s[1] & 0xfff0) == 0x20);
    !refused
}

/// The IPv4 address inside an IPv6 form that carries one, if `ip` is such a form.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let o = ip.octets();
    let tail = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    match s {
        // ::ffff:a.b.c.d (mapped) and ::a.b.c.d (compatible, deprecated; includes :: and ::1,
        // which map to 0.0.0.0 and 0.0.0.1 and so are refused like them).
        [0, 0, 0, 0, 0, 0xffff, _, _] | [0, 0, 0, 0, 0, 0, _, _] => Some(tail),
        // NAT64 well-known prefix.
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(tail),
        // NAT64 local-use prefix: translated by a local gateway, so never global.
        [0x64, 0xff9b, 1, ..] => Some(Ipv4Addr::UNSPECIFIED),
        // 6to4: the IPv4 address is bits 16..48.
        [0x2002, hi, lo, ..] => Some(Ipv4Addr::new(
            (hi >> 8) as u8,
            hi as u8,
            (lo >> 8) as u8,
            lo as u8,
        )),
        _ => None,
    }
}

/// The addresses on this host's own interfaces (including container runtime bridges such as
/// podman's `10.88.0.1` and `docker0`), read fresh each time because bridges come and go.
pub fn local_addresses() -> Vec<IpAddr> {
    let mut out = Vec::new();
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs allocates a list we walk read-only and free exactly once below.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return out;
    }
    let mut cur = list;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*cur };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: ifa_addr points to a sockaddr whose family says which struct it is.
            let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
            if family == libc::AF_INET {
                // SAFETY: family AF_INET means the sockaddr is a sockaddr_in.
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                out.push(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                    sin.sin_addr.s_addr,
                ))));
            } else if family == libc::AF_INET6 {
                // SAFETY: family AF_INET6 means the sockaddr is a sockaddr_in6.
                let sin6 = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                out.push(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)));
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: `list` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(list) };
    out
}

/// Resolves with the system resolver (one lookup).
pub fn system_resolve(name: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    Ok((name, port).to_socket_addrs()?.collect())
}

/// Decides which of `addrs` (what `name` resolved to) may be dialled: all of them, or none if
/// any is not global unicast or is one of `own` (the host's addresses). `Err` says why, naming
/// the first address refused.
pub fn check_resolved(
    name: &str,
    addrs: Vec<SocketAddr>,
    own: &[IpAddr],
) -> Result<Vec<SocketAddr>, String> {
    if addrs.is_empty() {
        return Err(format!("{name} resolved to no address"));
    }
    for a in &addrs {
        let ip = canonical(a.ip());
        if !is_global_unicast(ip) {
            return Err(format!(
                "{name} resolves to {ip}, which is not a public internet address; only a \
                 literal IP pattern allows that"
            ));
        }
        if own.iter().any(|o| canonical(*o) == ip) {
            return Err(format!(
                "{name} resolves to {ip}, an address of this host; only a literal IP pattern \
                 allows that"
            ));
        }
    }
    Ok(addrs)
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is, so both spellings compare equal.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_classes() {
        // (address, global unicast?)
        let cases: &[(&str, bool)] = &[
            ("93.184.216.34", true),
            ("1.1.1.1", true),
            ("8.8.8.8", true),
            ("100.63.255.255", true),
            ("100.128.0.0", true),
            ("172.15.255.255", true),
            ("172.32.0.0", true),
            ("192.0.1.1", true),
            ("198.17.255.255", true),
            ("198.20.0.0", true),
            ("223.255.255.255", true),
            ("0.0.0.0", false),
            ("0.1.2.3", false),
            ("10.0.0.1", false),
            ("10.88.0.1", false),
            ("100.64.0.1", false),
            ("100.127.255.255", false),
            ("127.0.0.1", false),
            ("127.255.0.1", false),
            ("169.254.169.254", false),
            ("172.16.0.1", false),
            ("172.17.0.1", false),
            ("172.31.255.255", false),
            ("192.0.0.1", false),
            ("192.0.2.2", false),
            ("192.88.99.1", false),
            ("192.168.1.1", false),
            ("198.18.0.1", false),
            ("198.19.255.255", false),
            ("198.51.100.7", false),
            ("203.0.113.9", false),
            ("224.0.0.1", false),
            ("239.255.255.250", false),
            ("240.0.0.1", false),
            ("255.255.255.255", false),
            ("2606:4700::1111", true),
            ("2a00:1450:4001::200e", true),
            ("2001:4860:4860::8888", true),
            ("::", false),
            ("::1", false),
            ("::ffff:127.0.0.1", false),
            ("::ffff:10.0.0.1", false),
            ("::ffff:8.8.8.8", true),
            ("::10.0.0.1", false),
            ("::8.8.8.8", true),
            ("64:ff9b::a00:1", false),
            ("64:ff9b::808:808", true),
            ("64:ff9b:1::808:808", false),
            ("2002:a00:1::1", false),
            ("2002:c0a8:101::1", false),
            ("2002:808:808::1", true),
            ("2001::1", false),
            ("2001:0:4136:e378:8000:63bf:3fff:fdd2", false),
            ("2001:db8::1", false),
            ("3fff::1", false),
            ("2001:2::1", false),
            ("2001:10::1", false),
            ("2001:20::1", false),
            ("100::1", false),
            ("fc00::1", false),
            ("fd00::2", false),
            ("fe80::1", false),
            ("fec0::1", false),
            ("ff02::1", false),
            ("ff0e::1", false),
            ("4000::1", false),
        ];
        for (ip, want) in cases {
            let got = is_global_unicast(ip.parse().unwrap());
            assert_eq!(got, *want, "{ip}");
        }
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn every_resolved_address_must_pass() {
        let own: Vec<IpAddr> = vec!["81.2.69.160".parse().unwrap()];
        let ok = check_resolved("a.org", vec![sa("93.184.216.34:443")], &own);
        assert_eq!(ok, Ok(vec![sa("93.184.216.34:443")]));
        // One bad address among good ones refuses the name (the dialler would try them all).
        let mixed = check_resolved(
            "a.org",
            vec![sa("93.184.216.34:443"), sa("10.0.0.1:443")],
            &own,
        );
        assert!(mixed.unwrap_err().contains("10.0.0.1"));
        // The host's own public address, in either spelling.
        for addr in ["81.2.69.160:443", "[::ffff:81.2.69.160]:443"] {
            let err = check_resolved("me.org", vec![sa(addr)], &own).unwrap_err();
            assert!(err.contains("an address of this host"), "{err}");
        }
        for addr in [
            "127.0.0.1:80",
            "[::1]:80",
            "169.254.169.254:80",
            "[fd00::2]:80",
        ] {
            assert!(
                check_resolved("x.org", vec![sa(addr)], &own).is_err(),
                "{addr}"
            );
        }
        assert!(check_resolved("x.org", vec![], &own).is_err());
    }

    #[test]
    fn local_addresses_include_loopback() {
        let own = local_addresses();
        assert!(
            own.contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)),
            "getifaddrs found {own:?}"
        );
    }
}
