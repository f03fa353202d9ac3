//! Which network addresses plugins may connect to: the SSRF guard.
//!
//! `allowed_hosts` says which *names* a plugin may use; this says which *addresses* any name may
//! lead to. Addresses that reach the host itself or its private networks are refused, whatever
//! the name or the allowlist pattern (`*`, `localhost`, a public name whose DNS answers
//! 127.0.0.1): loopback, RFC 1918 private, link-local (cloud metadata at 169.254.169.254),
//! CGNAT, multicast, broadcast, unspecified, the other IANA special-purpose ranges, and their
//! IPv6 equivalents (IPv4-mapped, NAT64, 6to4 and Teredo addresses are judged by the IPv4
//! address inside).
//!
//! The check runs on the resolved addresses, at connect time (`outbound::PolicyResolver`), like
//! Svix's `NonLocalDnsResolver`: the name is resolved once and the connection goes to an address
//! that passed, so DNS rebinding (a public answer for the check, a private one for the connect)
//! has no second lookup to exploit. IP literals skip DNS and are checked the same way.
//!
//! Operators opt in to private networks with CIDRs: `allowed_private_networks` in `[server]`
//! (every destination) and on a `[[destination]]` (that one too); the two lists add up.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// The private networks one destination may reach; empty refuses all of them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct NetworkPolicy {
    allowed: Vec<IpNet>,
}

/// Why an address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "address {addr} is {range}; plugins may not connect to it unless an operator lists it in allowed_private_networks"
)]
pub struct AddressDenied {
    pub addr: IpAddr,
    pub range: SpecialRange,
}

/// The kind of non-public address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecialRange {
    Loopback,
    Private,
    LinkLocal,
    Cgnat,
    Multicast,
    Broadcast,
    Unspecified,
    /// Documentation, benchmarking, reserved and protocol-assignment ranges.
    Reserved,
    UniqueLocal,
}

impl fmt::Display for SpecialRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SpecialRange::Loopback => "a loopback address",
            SpecialRange::Private => "a private address",
            SpecialRange::LinkLocal => "a link-local address (cloud metadata lives here)",
            SpecialRange::Cgnat => "a carrier-grade NAT address",
            SpecialRange::Multicast => "a multicast address",
            SpecialRange::Broadcast => "the broadcast address",
            SpecialRange::Unspecified => "the unspecified address",
            SpecialRange::Reserved => "a reserved address",
            SpecialRange::UniqueLocal => "an IPv6 unique-local address",
        })
    }
}

impl NetworkPolicy {
    pub fn new(allowed: Vec<IpNet>) -> NetworkPolicy {
        let mut allowed = allowed;
        allowed.sort();
        allowed.dedup();
        NetworkPolicy { allowed }
    }

    /// The server's list plus a destination's.
    pub fn merged(server: &[IpNet], destination: &[IpNet]) -> NetworkPolicy {
        NetworkPolicy::new(server.iter().chain(destination).copied().collect())
    }

    /// Whether a plugin may connect to `addr`.
    pub fn check(&self, addr: IpAddr) -> Result<(), AddressDenied> {
        let addr = canonical(addr);
        let Some(range) = special_range(addr) else {
            return Ok(());
        };
        if self.allowed.iter().any(|net| net.contains(&addr)) {
            return Ok(());
        }
        Err(AddressDenied { addr, range })
    }
}

/// IPv6 addresses that carry an IPv4 address and reach it: judge that one.
/// - IPv4-mapped `::ffff:a.b.c.d`;
/// - NAT64 `64:ff9b::a.b.c.d` (RFC 6052);
/// - 6to4 `2002:aabb:ccdd::/48` (RFC 3056): a relay forwards to `aa.bb.cc.dd`;
/// - Teredo `2001:0::/32` (RFC 4380): the client's address is the last 32 bits, inverted.
fn canonical(addr: IpAddr) -> IpAddr {
    let IpAddr::V6(v6) = addr else {
        return addr;
    };
    if let Some(v4) = v6.to_ipv4_mapped() {
        return IpAddr::V4(v4);
    }
    let s = v6.segments();
    let v4 = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return IpAddr::V4(v4(s[6], s[7]));
    }
    if s[0] == 0x2002 {
        return IpAddr::V4(v4(s[1], s[2]));
    }
    if s[..2] == [0x2001, 0] {
        return IpAddr::V4(v4(!s[6], !s[7]));
    }
    addr
}

fn special_range(addr: IpAddr) -> Option<SpecialRange> {
    match addr {
        IpAddr::V4(v4) => special_v4(v4),
        IpAddr::V6(v6) => special_v6(v6),
    }
}

fn special_v4(ip: Ipv4Addr) -> Option<SpecialRange> {
    let [a, b, c, _] = ip.octets();
    Some(match () {
        _ if ip.is_unspecified() || a == 0 => SpecialRange::Unspecified,
        _ if ip.is_loopback() => SpecialRange::Loopback,
        _ if ip.is_private() => SpecialRange::Private,
        _ if ip.is_link_local() => SpecialRange::LinkLocal,
        _ if a == 100 && (64..128).contains(&b) => SpecialRange::Cgnat,
        _ if ip.is_multicast() => SpecialRange::Multicast,
        _ if ip.is_broadcast() => SpecialRange::Broadcast,
        // 192.0.0.0/24 protocol assignments, 192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24
        // documentation, 198.18.0.0/15 benchmarking, 240.0.0.0/4 reserved.
        _ if (a, b, c) == (192, 0, 0)
            || ip.is_documentation()
            || (a == 198 && (b == 18 || b == 19))
            || a >= 240 =>
        {
            SpecialRange::Reserved
        }
        _ => return None,
    })
}

fn special_v6(ip: Ipv6Addr) -> Option<SpecialRange> {
    let s = ip.segments();
    Some(match () {
        _ if ip.is_unspecified() => SpecialRange::Unspecified,
        _ if ip.is_loopback() => SpecialRange::Loopback,
        _ if ip.is_multicast() => SpecialRange::Multicast,
        _ if ip.is_unicast_link_local() => SpecialRange::LinkLocal,
        _ if ip.is_unique_local() => SpecialRange::UniqueLocal,
        // fec0::/10 (deprecated site-local), 2001:db8::/32 documentation, ::/96 IPv4-compatible
        // (deprecated), 100::/64 discard.
        _ if (s[0] & 0xffc0) == 0xfec0
            || (s[0], s[1]) == (0x2001, 0x0db8)
            || s[..6] == [0; 6]
            || s[..4] == [0x100, 0, 0, 0] =>
        {
            SpecialRange::Reserved
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(policy: &NetworkPolicy, addr: &str) -> Option<SpecialRange> {
        let addr: IpAddr = addr.parse().unwrap();
        policy.check(addr).err().map(|e| e.range)
    }

    #[test]
    fn special_addresses_are_refused_by_default() {
        let p = NetworkPolicy::default();
        use SpecialRange::*;
        for (addr, range) in [
            ("127.0.0.1", Loopback),
            ("127.255.0.9", Loopback),
            ("10.1.2.3", Private),
            ("172.16.0.1", Private),
            ("192.168.1.1", Private),
            ("169.254.169.254", LinkLocal),
            ("100.64.0.1", Cgnat),
            ("224.0.0.1", Multicast),
            ("255.255.255.255", Broadcast),
            ("0.0.0.0", Unspecified),
            ("0.1.2.3", Unspecified),
            ("192.0.2.10", Reserved),
            ("198.18.0.1", Reserved),
            ("240.0.0.1", Reserved),
            ("::1", Loopback),
            ("::", Unspecified),
            ("::ffff:127.0.0.1", Loopback),
            ("::ffff:169.254.169.254", LinkLocal),
            ("64:ff9b::a9fe:a9fe", LinkLocal),
            ("2002:7f00:1::", Loopback),
            ("2002:a9fe:a9fe::1", LinkLocal),
            ("2002:c0a8:101:5::1", Private),
            ("2001:0:4136:e378:8000:63bf:80ff:fffe", Loopback),
            ("2001::5601:5601", LinkLocal),
            ("fe80::1", LinkLocal),
            ("fc00::1", UniqueLocal),
            ("fd12:3456::1", UniqueLocal),
            ("ff02::1", Multicast),
            ("2001:db8::1", Reserved),
            ("::127.0.0.1", Reserved),
        ] {
            assert_eq!(refused(&p, addr), Some(range), "{addr}");
        }
    }

    #[test]
    fn public_addresses_pass() {
        let p = NetworkPolicy::default();
        for addr in [
            "1.1.1.1",
            "8.8.8.8",
            "100.128.0.1",
            "172.32.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "2002:808:808::1",
            "2001:0:4136:e378:8000:63bf:f7f7:f7f7",
        ] {
            assert_eq!(refused(&p, addr), None, "{addr}");
        }
    }

    #[test]
    fn listed_networks_are_allowed_and_nothing_else() {
        let p = NetworkPolicy::merged(
            &["127.0.0.0/8".parse().unwrap()],
            &["fd00::/8".parse().unwrap()],
        );
        assert_eq!(refused(&p, "127.0.0.1"), None);
        assert_eq!(
            refused(&p, "::ffff:127.0.0.1"),
            None,
            "mapped: judged as IPv4"
        );
        assert_eq!(refused(&p, "2002:7f00:1::"), None, "6to4: judged as IPv4");
        assert_eq!(refused(&p, "fd00::1"), None);
        assert_eq!(refused(&p, "::1"), Some(SpecialRange::Loopback));
        assert_eq!(
            refused(&p, "169.254.169.254"),
            Some(SpecialRange::LinkLocal)
        );
    }

    #[test]
    fn the_refusal_says_what_and_how_to_allow_it() {
        let err = NetworkPolicy::default()
            .check("169.254.169.254".parse().unwrap())
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "address 169.254.169.254 is a link-local address (cloud metadata lives here); plugins may not connect to it unless an operator lists it in allowed_private_networks"
        );
    }
}
