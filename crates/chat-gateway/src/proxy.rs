//! PROXY protocol v2 (binary) header, read before HTTP when `--proxy-protocol`
//! is set and the peer is in `--proxy-protocol-from`, so that logs and
//! per-address limits see the real client address behind chat-lb. Other
//! peers must not send one. Without the flag a PROXY header is just garbage
//! to hyper.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::io::{AsyncRead, AsyncReadExt as _};
use tokio::net::TcpStream;

/// The 12-byte signature every v2 header starts with.
pub const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Headers longer than this are refused (addresses plus a few TLVs fit easily).
const MAX_BODY: usize = 512;

/// Why a connection's PROXY header was refused.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("reading the PROXY header: {0}")]
    Io(#[from] std::io::Error),
    #[error("not a PROXY protocol v2 header")]
    BadSignature,
    #[error("unsupported PROXY version/command byte {0:#04x}")]
    BadVersion(u8),
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

/// Reads one v2 header from `stream`. Returns the client's address for a
/// PROXY command over TCP, `None` for LOCAL (e.g. the balancer's health
/// checks) or an address family this gateway does not use.
pub async fn read_header<R: AsyncRead + Unpin>(
    stream: &mut R,
) -> Result<Option<SocketAddr>, ProxyError> {
    let mut head = [0u8; 16];
    stream.read_exact(&mut head).await?;
    if head[..12] != SIGNATURE {
        return Err(ProxyError::BadSignature);
    }
    let version_command = head[12];
    let family = head[13];
    let len = usize::from(u16::from_be_bytes([head[14], head[15]]));
    if len > MAX_BODY {
        return Err(ProxyError::BadLength(len));
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await?;
    match version_command {
        0x20 => return Ok(None), // LOCAL: no address information
        0x21 => {}
        other => return Err(ProxyError::BadVersion(other)),
    }
    Ok(match family {
        // TCP over IPv4: src addr, dst addr, src port, dst port.
        0x11 => {
            let b = body.get(..12).ok_or(ProxyError::BadLength(len))?;
            let ip = Ipv4Addr::new(b[0], b[1], b[2], b[3]);
            Some(SocketAddr::from((ip, u16::from_be_bytes([b[8], b[9]]))))
        }
        // TCP over IPv6.
        0x21 => {
            let b = body.get(..36).ok_or(ProxyError::BadLength(len))?;
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

    fn v4_header(src: [u8; 4], src_port: u16) -> Vec<u8> {
        let mut h = SIGNATURE.to_vec();
        h.extend([0x21, 0x11, 0, 12]);
        h.extend(src);
        h.extend([127, 0, 0, 1]);
        h.extend(src_port.to_be_bytes());
        h.extend(8080u16.to_be_bytes());
        h
    }

    #[tokio::test]
    async fn reads_the_client_address_and_leaves_the_rest() {
        let mut bytes = v4_header([10, 1, 2, 3], 40000);
        bytes.extend(b"GET / HTTP/1.1\r\n");
        let mut reader = &bytes[..];
        let addr = read_header(&mut reader).await.unwrap();
        assert_eq!(addr, Some("10.1.2.3:40000".parse().unwrap()));
        assert_eq!(reader, b"GET / HTTP/1.1\r\n");
    }

    #[tokio::test]
    async fn ipv6_and_local() {
        let mut h = SIGNATURE.to_vec();
        h.extend([0x21, 0x21, 0, 36]);
        h.extend(Ipv6Addr::LOCALHOST.octets());
        h.extend(Ipv6Addr::LOCALHOST.octets());
        h.extend(5555u16.to_be_bytes());
        h.extend(80u16.to_be_bytes());
        assert_eq!(
            read_header(&mut &h[..]).await.unwrap(),
            Some("[::1]:5555".parse().unwrap())
        );

        let mut local = SIGNATURE.to_vec();
        local.extend([0x20, 0x00, 0, 0]);
        assert_eq!(read_header(&mut &local[..]).await.unwrap(), None);
    }

    #[tokio::test]
    async fn refuses_garbage() {
        assert!(matches!(
            read_header(&mut &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..]).await,
            Err(ProxyError::BadSignature)
        ));
        let mut v1 = SIGNATURE.to_vec();
        v1.extend([0x11, 0x11, 0, 0]);
        assert!(matches!(
            read_header(&mut &v1[..]).await,
            Err(ProxyError::BadVersion(0x11))
        ));
        let mut long = SIGNATURE.to_vec();
        long.extend([0x21, 0x11, 0xff, 0xff]);
        assert!(matches!(
            read_header(&mut &long[..]).await,
            Err(ProxyError::BadLength(_))
        ));
        let mut short = SIGNATURE.to_vec();
        short.extend([0x21, 0x11, 0, 4, 1, 2, 3, 4]);
        assert!(matches!(
            read_header(&mut &short[..]).await,
            Err(ProxyError::BadLength(4))
        ));
    }
}
