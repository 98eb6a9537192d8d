//! PROXY protocol v2 (the binary form): the header a Layer-4 balancer writes before the
//! bytes it relays, so the backend learns who the real client is. chat-lb writes it
//! ([`header`], [`local_header`]); the gateway reads it ([`starts_like_header`],
//! [`read_header`]) from the peers it trusts. Both sides live here so that one round-trip
//! test holds them together.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::io::{AsyncRead, AsyncReadExt as _};
use tokio::net::TcpStream;

/// The fixed 12-byte signature every v2 header starts with.
pub const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// Version 2, command PROXY: the connection is relayed on behalf of a client.
const VERSION_2_PROXY: u8 = 0x21;
/// Version 2, command LOCAL: the balancer's own connection (a health check).
const VERSION_2_LOCAL: u8 = 0x20;
const TCP_OVER_IPV4: u8 = 0x11;
const TCP_OVER_IPV6: u8 = 0x21;
const UNSPECIFIED: u8 = 0x00;
/// Signature, version/command, family, length.
const FIXED_LEN: usize = 16;
/// Addresses and ports of TCP over IPv4 and over IPv6.
const IPV4_BODY: usize = 12;
const IPV6_BODY: usize = 36;
/// Headers whose body is longer than this are refused (addresses plus a few TLVs fit easily).
pub const MAX_BODY: usize = 512;

/// The header for a relayed connection from `client` that arrived at `local` (our address).
///
/// IPv4-mapped IPv6 addresses (a dual-stack listener) are written as IPv4 when both sides
/// are IPv4, else everything is written as IPv6.
pub fn header(client: SocketAddr, local: SocketAddr) -> Vec<u8> {
    let (src, dst) = (client.ip().to_canonical(), local.ip().to_canonical());
    let mut out = Vec::with_capacity(FIXED_LEN + IPV6_BODY);
    out.extend_from_slice(&SIGNATURE);
    out.push(VERSION_2_PROXY);
    match (src, dst) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            out.push(TCP_OVER_IPV4);
            out.extend_from_slice(&(IPV4_BODY as u16).to_be_bytes());
            out.extend_from_slice(&src.octets());
            out.extend_from_slice(&dst.octets());
        }
        (src, dst) => {
            let v6 = |ip: IpAddr| match ip {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            out.push(TCP_OVER_IPV6);
            out.extend_from_slice(&(IPV6_BODY as u16).to_be_bytes());
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
pub fn local_header() -> [u8; FIXED_LEN] {
    let mut out = [0; FIXED_LEN];
    out[..12].copy_from_slice(&SIGNATURE);
    out[12] = VERSION_2_LOCAL;
    out[13] = UNSPECIFIED;
    // Bytes 14..16: address length 0.
    out
}

/// Why a connection's PROXY header was refused.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The stream failed or ended before the header was complete.
    #[error("reading the PROXY header: {0}")]
    Io(#[from] std::io::Error),
    /// The first 12 bytes are not the v2 signature.
    #[error("not a PROXY protocol v2 header")]
    BadSignature,
    /// Not version 2, or a command other than LOCAL and PROXY.
    #[error("unsupported PROXY version/command byte {0:#04x}")]
    BadVersion(u8),
    /// The body is longer than [`MAX_BODY`], or too short for the addresses of its family.
    #[error("PROXY header body of {0} bytes is too long or too short for its family")]
    BadLength(usize),
}

/// Whether `stream` starts like a PROXY v2 header: its first byte is the
/// signature's CR, which no HTTP request starts with. Waits for that byte
/// without consuming it; `false` if the peer closes first.
pub async fn starts_like_header(stream: &TcpStream) -> std::io::Result<bool> {
    let mut first = [0u8; 1];
    let n = stream.peek(&mut first).await?;
    Ok(n == 1 && first[0] == SIGNATURE[0])
}

/// Reads one v2 header from `stream`, and not a byte more. Returns the client's address for
/// a PROXY command over TCP, `None` for LOCAL (e.g. a balancer's health checks) or an
/// address family without one (UNSPEC, UNIX sockets).
pub async fn read_header<R: AsyncRead + Unpin>(
    stream: &mut R,
) -> Result<Option<SocketAddr>, ProxyError> {
    let mut head = [0u8; FIXED_LEN];
    stream.read_exact(&mut head).await?;
    let len = body_len(&head)?;
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await?;
    parse_body(&head, &body)
}

/// Checks the fixed part of a header; returns the length of the body that follows.
fn body_len(head: &[u8; FIXED_LEN]) -> Result<usize, ProxyError> {
    if head[..12] != SIGNATURE {
        return Err(ProxyError::BadSignature);
    }
    let len = usize::from(u16::from_be_bytes([head[14], head[15]]));
    if len > MAX_BODY {
        return Err(ProxyError::BadLength(len));
    }
    Ok(len)
}

/// The client address a complete header carries (see [`read_header`]).
fn parse_body(head: &[u8; FIXED_LEN], body: &[u8]) -> Result<Option<SocketAddr>, ProxyError> {
    match head[12] {
        VERSION_2_LOCAL => return Ok(None), // no address information
        VERSION_2_PROXY => {}
        other => return Err(ProxyError::BadVersion(other)),
    }
    let short = || ProxyError::BadLength(body.len());
    Ok(match head[13] {
        // Source address, destination address, source port, destination port.
        TCP_OVER_IPV4 => {
            let b = body.get(..IPV4_BODY).ok_or_else(short)?;
            let ip = Ipv4Addr::new(b[0], b[1], b[2], b[3]);
            Some(SocketAddr::from((ip, u16::from_be_bytes([b[8], b[9]]))))
        }
        TCP_OVER_IPV6 => {
            let b = body.get(..IPV6_BODY).ok_or_else(short)?;
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&b[..16]);
            Some(SocketAddr::from((
                Ipv6Addr::from(octets),
                u16::from_be_bytes([b[32], b[33]]),
            )))
        }
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read(bytes: &[u8]) -> Result<Option<SocketAddr>, ProxyError> {
        read_header(&mut &bytes[..]).await
    }

    #[test]
    fn ipv4_header_layout() {
        let h = header(
            "192.0.2.1:56324".parse().unwrap(),
            "198.51.100.7:443".parse().unwrap(),
        );
        // The signature as the spec spells it, independently of SIGNATURE.
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
            &"::ffff:10.0.0.1".parse::<Ipv6Addr>().unwrap().octets()
        );
    }

    #[tokio::test]
    async fn what_is_written_reads_back() {
        let cases = [
            ("192.0.2.1:56324", "198.51.100.7:443", "192.0.2.1:56324"),
            ("[2001:db8::1]:1", "[::1]:2", "[2001:db8::1]:1"),
            ("[::ffff:10.0.0.1]:5", "[::ffff:10.0.0.2]:6", "10.0.0.1:5"),
            ("10.0.0.1:65535", "[::1]:6", "[::ffff:10.0.0.1]:65535"),
            ("0.0.0.0:0", "255.255.255.255:65535", "0.0.0.0:0"),
        ];
        for (client, local, expected) in cases {
            let mut bytes = header(client.parse().unwrap(), local.parse().unwrap());
            bytes.extend_from_slice(b"GET / HTTP/1.1\r\n");
            let mut reader = &bytes[..];
            let read = read_header(&mut reader).await.unwrap();
            assert_eq!(read, Some(expected.parse().unwrap()), "{client} -> {local}");
            assert_eq!(reader, b"GET / HTTP/1.1\r\n", "reads exactly the header");
        }
        let mut local = local_header().to_vec();
        local.extend_from_slice(b"rest");
        let mut reader = &local[..];
        assert_eq!(read_header(&mut reader).await.unwrap(), None);
        assert_eq!(reader, b"rest");
    }

    #[test]
    fn local_header_has_no_addresses() {
        let h = local_header();
        assert_eq!(&h[..12], &SIGNATURE);
        assert_eq!(&h[12..], &[0x20, 0x00, 0x00, 0x00]);
    }

    #[tokio::test]
    async fn local_may_carry_a_body_and_other_families_give_no_address() {
        let mut local = SIGNATURE.to_vec();
        local.extend([0x20, 0x11, 0, 12]);
        local.extend([1; 12]);
        assert_eq!(read(&local).await.unwrap(), None);
        // AF_UNIX stream: 216 bytes of socket paths, no IP address.
        let mut unix = SIGNATURE.to_vec();
        unix.extend([0x21, 0x31, 0, 216]);
        unix.extend([0; 216]);
        assert_eq!(read(&unix).await.unwrap(), None);
        // TLVs after the addresses are skipped.
        let mut tlv = header(
            "10.1.2.3:4".parse().unwrap(),
            "10.0.0.1:80".parse().unwrap(),
        );
        tlv[15] = 12 + 5;
        tlv.extend([0x04, 0, 2, b'h', b'i']);
        assert_eq!(
            read(&tlv).await.unwrap(),
            Some("10.1.2.3:4".parse().unwrap())
        );
    }

    #[tokio::test]
    async fn refuses_malformed_headers() {
        assert!(matches!(
            read(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await,
            Err(ProxyError::BadSignature)
        ));
        // Version 1's text form starts differently; a v1 byte after a v2 signature is refused.
        let mut v1 = SIGNATURE.to_vec();
        v1.extend([0x11, 0x11, 0, 0]);
        assert!(matches!(read(&v1).await, Err(ProxyError::BadVersion(0x11))));
        let mut unknown_command = SIGNATURE.to_vec();
        unknown_command.extend([0x22, 0x11, 0, 0]);
        assert!(matches!(
            read(&unknown_command).await,
            Err(ProxyError::BadVersion(0x22))
        ));
        let mut long = SIGNATURE.to_vec();
        long.extend([0x21, 0x11, 0xff, 0xff]);
        assert!(matches!(
            read(&long).await,
            Err(ProxyError::BadLength(65535))
        ));
        let mut just_over = SIGNATURE.to_vec();
        just_over.extend([0x21, 0x11]);
        just_over.extend(((MAX_BODY + 1) as u16).to_be_bytes());
        just_over.extend(vec![0; MAX_BODY + 1]);
        assert!(matches!(
            read(&just_over).await,
            Err(ProxyError::BadLength(_))
        ));
        let mut short_v4 = SIGNATURE.to_vec();
        short_v4.extend([0x21, 0x11, 0, 4, 1, 2, 3, 4]);
        assert!(matches!(
            read(&short_v4).await,
            Err(ProxyError::BadLength(4))
        ));
        let mut short_v6 = SIGNATURE.to_vec();
        short_v6.extend([0x21, 0x21, 0, 12]);
        short_v6.extend([0; 12]);
        assert!(matches!(
            read(&short_v6).await,
            Err(ProxyError::BadLength(12))
        ));
    }

    #[tokio::test]
    async fn a_truncated_header_is_an_io_error() {
        let whole = header(
            "192.0.2.1:1".parse().unwrap(),
            "192.0.2.2:2".parse().unwrap(),
        );
        for cut in [0, 5, 12, 15, 16, 20, whole.len() - 1] {
            assert!(
                matches!(read(&whole[..cut]).await, Err(ProxyError::Io(_))),
                "cut at {cut}"
            );
        }
        assert!(read(&whole).await.is_ok());
    }

    #[tokio::test]
    async fn every_single_byte_change_is_refused_or_read_as_a_header() {
        // No change to a valid header may panic or read past the header's own length.
        let whole = header(
            "[2001:db8::7]:9".parse().unwrap(),
            "[2001:db8::8]:10".parse().unwrap(),
        );
        for at in 0..whole.len() {
            for value in [0x00, 0x01, 0x20, 0x21, 0x7f, 0xff] {
                let mut bytes = whole.clone();
                bytes[at] = value;
                bytes.extend(vec![0xaa; 600]);
                let mut reader = &bytes[..];
                if read_header(&mut reader).await.is_ok() {
                    let len = usize::from(u16::from_be_bytes([bytes[14], bytes[15]]));
                    assert_eq!(reader.len(), bytes.len() - 16 - len, "byte {at} = {value}");
                }
            }
        }
    }
}
