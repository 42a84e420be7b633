//! Address management helpers: subnets, the next free address, MACs from addresses.

use std::net::Ipv4Addr;
use std::str::FromStr;

use crate::Error;

/// An IPv4 subnet (network address and prefix length).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    /// Network address (host bits zero).
    pub addr: Ipv4Addr,
    /// Prefix length, 8..=30.
    pub prefix: u8,
}

impl Subnet {
    fn mask(self) -> u32 {
        u32::MAX << (32 - u32::from(self.prefix))
    }

    /// Whether `ip` lies inside.
    pub fn contains(self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.addr)
    }

    /// Whether the two subnets share any address.
    pub fn overlaps(self, other: Subnet) -> bool {
        let mask = self.mask() & other.mask();
        u32::from(self.addr) & mask == u32::from(other.addr) & mask
    }

    /// The first host address, the usual gateway.
    pub fn first_host(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) + 1)
    }

    /// The next free host address, lowest first, skipping `used` (which should hold
    /// the gateway). Network and broadcast addresses are never handed out.
    pub fn next_free(self, used: &[Ipv4Addr]) -> Result<Ipv4Addr, Error> {
        let base = u32::from(self.addr);
        let size = 1u32 << (32 - u32::from(self.prefix));
        let mut taken: Vec<u32> = used.iter().map(|ip| u32::from(*ip)).collect();
        taken.sort_unstable();
        (base + 1..base + size - 1)
            .find(|c| taken.binary_search(c).is_err())
            .map(Ipv4Addr::from)
            .ok_or(Error::SubnetFull {
                subnet: self.to_string(),
            })
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Subnet {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = |reason: &str| Error::BadSubnet {
            value: s.to_owned(),
            reason: reason.to_owned(),
        };
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| bad("expected ADDRESS/PREFIX"))?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad("not an IPv4 address"))?;
        let prefix: u8 = prefix.parse().map_err(|_| bad("bad prefix length"))?;
        if !(8..=30).contains(&prefix) {
            return Err(bad("prefix length must be between 8 and 30"));
        }
        let net = Subnet { addr, prefix };
        if u32::from(addr) & net.mask() != u32::from(addr) {
            return Err(bad("host bits set"));
        }
        Ok(net)
    }
}

/// A locally administered MAC derived from the address, like docker's 02:42:a.b.c.d.
pub fn mac_for(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x02, 0x42, o[0], o[1], o[2], o[3]]
}

/// Text form aa:bb:cc:dd:ee:ff.
pub fn mac_string(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// IPv4 routes of the host's main table as subnets (from /proc/net/route), to avoid
/// choosing a subnet that is already in use.
pub fn host_routes() -> Vec<Subnet> {
    let text = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let dest = u32::from_str_radix(f.get(1)?, 16).ok()?;
            let mask = u32::from_str_radix(f.get(7)?, 16).ok()?;
            if mask == 0 {
                return None; // default route
            }
            Some(Subnet {
                addr: Ipv4Addr::from(u32::from_be(dest)),
                prefix: u32::from_be(mask).count_ones() as u8,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_free_skips_used_and_edges() {
        let net: Subnet = "10.1.2.0/30".parse().unwrap();
        let gw = net.first_host();
        assert_eq!(gw, Ipv4Addr::new(10, 1, 2, 1));
        assert_eq!(net.next_free(&[gw]).unwrap(), Ipv4Addr::new(10, 1, 2, 2));
        let err = net
            .next_free(&[gw, Ipv4Addr::new(10, 1, 2, 2)])
            .unwrap_err();
        assert_eq!(err.to_string(), "subnet 10.1.2.0/30 has no free address");
    }

    #[test]
    fn subnet_parse_rejects_bad_values() {
        assert!("10.0.0.1/24".parse::<Subnet>().is_err());
        assert!("10.0.0.0".parse::<Subnet>().is_err());
        assert!("10.0.0.0/31".parse::<Subnet>().is_err());
        let a: Subnet = "10.0.0.0/16".parse().unwrap();
        let b: Subnet = "10.0.5.0/24".parse().unwrap();
        assert!(a.overlaps(b) && b.overlaps(a));
        assert!(!b.overlaps("10.0.6.0/24".parse().unwrap()));
        assert!(a.contains(Ipv4Addr::new(10, 0, 200, 1)));
    }

    #[test]
    fn mac_is_local_and_from_ip() {
        let mac = mac_for(Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(mac_string(mac), "02:42:0a:00:00:02");
    }
}
