//! `--local-ips`: the source addresses connections are spread over.
//!
//! A socket bound to an address before connecting needs a free local port
//! on that address, and one address has only ~28,000 ephemeral ports; with
//! 127.0.0.x sources (all of 127.0.0.0/8 is loopback) the limit goes away.

use std::net::{IpAddr, Ipv4Addr};

use anyhow::{bail, Context as _, Result};

/// More addresses than any benchmark here could use.
const MAX_ADDRESSES: u32 = 65_536;

/// Parses `127.0.0.1-127.0.0.40`, `127.0.0.1,127.0.0.2`, or a mix of both
/// (comma-separated items, each an address or an inclusive IPv4 range).
pub(crate) fn parse_local_ips(spec: &str) -> Result<Vec<IpAddr>> {
    let mut ips = Vec::new();
    for item in spec
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
    {
        match item.split_once('-') {
            None => ips.push(
                item.parse::<IpAddr>()
                    .with_context(|| format!("invalid address {item:?}"))?,
            ),
            Some((first, last)) => {
                let parse = |text: &str| {
                    text.trim()
                        .parse::<Ipv4Addr>()
                        .with_context(|| format!("invalid IPv4 address {text:?} in {item:?}"))
                };
                let (first, last) = (u32::from(parse(first)?), u32::from(parse(last)?));
                if last < first {
                    bail!("range {item:?} ends before it starts");
                }
                if last - first >= MAX_ADDRESSES {
                    bail!("range {item:?} has more than {MAX_ADDRESSES} addresses");
                }
                ips.extend((first..=last).map(|ip| IpAddr::V4(Ipv4Addr::from(ip))));
            }
        }
    }
    if ips.is_empty() {
        bail!("no address in {spec:?}");
    }
    Ok(ips)
}

/// The source address for connection `index`, round-robin; `None` (let the
/// kernel choose) when no addresses were given.
pub(crate) fn pick(ips: &[IpAddr], index: usize) -> Option<IpAddr> {
    (!ips.is_empty()).then(|| ips[index % ips.len()])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_lists_expand_in_order() {
        let ips = parse_local_ips("127.0.0.1-127.0.0.3, 127.0.1.9").unwrap();
        let want: Vec<IpAddr> = ["127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.1.9"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(ips, want);
        // A range may cross an octet boundary.
        assert_eq!(parse_local_ips("127.0.0.255-127.0.1.0").unwrap().len(), 2);
        assert_eq!(
            parse_local_ips("::1").unwrap(),
            vec!["::1".parse::<IpAddr>().unwrap()]
        );
    }

    #[test]
    fn bad_specs_are_refused() {
        for bad in [
            "",
            "127.0.0.5-127.0.0.1",
            "127.0.0.1-",
            "nonsense",
            "10.0.0.0-10.255.255.255",
            "::1-::2",
        ] {
            assert!(parse_local_ips(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn picks_round_robin() {
        let ips = parse_local_ips("127.0.0.1-127.0.0.2").unwrap();
        assert_eq!(pick(&ips, 0), Some(ips[0]));
        assert_eq!(pick(&ips, 3), Some(ips[1]));
        assert_eq!(pick(&[], 3), None);
    }
}
