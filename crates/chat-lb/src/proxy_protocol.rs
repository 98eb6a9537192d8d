//! PROXY protocol v2 headers (binary form) that tell a backend who the real client is.

use std::net::{IpAddr, SocketAddr};

/// The fixed 12-byte signature every v2 header starts with.
pub const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// Version 2, command PROXY: the connection is relayed on behalf of a client.
const VERSION_2_PROXY: u8 = 0x21;
/// Version 2, command LOCAL: the balancer's own connection (a health check).
const VERSION_2_LOCAL: u8 = 0x20;
const TCP_OVER_IPV4: u8 = 0x11;
const TCP_OVER_IPV6: u8 = 0x21;
const UNSPECIFIED: u8 = 0x00;

/// The header for a relayed connection from `client` that arrived at `local` (our address).
///
/// Both addresses must be of one family; IPv4-mapped IPv6 addresses (a dual-stack listener)
/// are written as IPv4 when both sides are IPv4, else everything is written as IPv6.
pub fn header(client: SocketAddr, local: SocketAddr) -> Vec<u8> {
    let (src, dst) = (client.ip().to_canonical(), local.ip().to_canonical());
    let mut out = Vec::with_capacity(16 + 36);
    out.extend_from_slice(&SIGNATURE);
    out.push(VERSION_2_PROXY);
    match (src, dst) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            out.push(TCP_OVER_IPV4);
            out.extend_from_slice(&12u16.to_be_bytes());
            out.extend_from_slice(&src.octets());
            out.extend_from_slice(&dst.octets());
        }
        (src, dst) => {
            let v6 = |ip: IpAddr| match ip {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            out.push(TCP_OVER_IPV6);
            out.extend_from_slice(&36u16.to_be_bytes());
            out.extend_from_slice(&v6(src).octets());
            out.extend_from_slice(&v6(dst).octets());
        }
    }
    out.extend_from_slice(&client.port().to_be_bytes());
    out.extend_from_slice(&local.port().to_be_bytes());
    out
}

/// The header for the balancer's own connections (health checks): the spec's LOCAL command,
/// which a backend accepts without taking any address from it.
pub fn local_header() -> [u8; 16] {
    let mut out = [0; 16];
    out[..12].copy_from_slice(&SIGNATURE);
    out[12] = VERSION_2_LOCAL;
    out[13] = UNSPECIFIED;
    // Bytes 14..16: address length 0.
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_header_layout() {
        let h = header(
            "192.0.2.1:56324".parse().unwrap(),
            "198.51.100.7:443".parse().unwrap(),
        );
        let mut expected = b"\x0d\x0a\x0d\x0a\x00\x0d\x0a\x51\x55\x49\x54\x0a".to_vec();
        expected.extend_from_slice(&[0x21, 0x11, 0x00, 0x0c]);
        expected.extend_from_slice(&[192, 0, 2, 1, 198, 51, 100, 7]);
        expected.extend_from_slice(&[0xdc, 0x04, 0x01, 0xbb]);
        assert_eq!(h, expected);
    }

    #[test]
    fn ipv6_header_layout() {
        let h = header(
            "[2001:db8::1]:1".parse().unwrap(),
            "[::1]:2".parse().unwrap(),
        );
        assert_eq!(h.len(), 16 + 36);
        assert_eq!(&h[12..16], &[0x21, 0x21, 0x00, 0x24]);
        assert_eq!(&h[16..18], &[0x20, 0x01]);
        assert_eq!(h[16 + 31], 1);
        assert_eq!(h[32 + 15], 1);
        assert_eq!(&h[48..52], &[0, 1, 0, 2]);
    }

    #[test]
    fn mapped_and_mixed_families() {
        let mapped = header(
            "[::ffff:10.0.0.1]:5".parse().unwrap(),
            "[::ffff:10.0.0.2]:6".parse().unwrap(),
        );
        assert_eq!(mapped[13], TCP_OVER_IPV4);
        let mixed = header("10.0.0.1:5".parse().unwrap(), "[::1]:6".parse().unwrap());
        assert_eq!(mixed[13], TCP_OVER_IPV6);
        assert_eq!(
            &mixed[16..32],
            &"::ffff:10.0.0.1"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets()
        );
    }

    #[test]
    fn local_header_has_no_addresses() {
        let h = local_header();
        assert_eq!(&h[..12], &SIGNATURE);
        assert_eq!(&h[12..], &[0x20, 0x00, 0x00, 0x00]);
    }
}
