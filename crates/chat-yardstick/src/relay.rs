//! `chat-bench relay`: the least work a Layer-4 balancer can do, as a yardstick
//! for chat-lb. One thread, one epoll (through mio), one 16 KiB buffer: each
//! readable socket is read and the bytes written to its peer. No health
//! checks, no drain, no PROXY header, no limits, no async runtime; one read
//! per readable event (see [`drain`]), as chat-lb and tokio do.
//!
//! It never waits for a slow reader: a full peer socket is retried at once,
//! spinning. That is fine for what it is for (small messages on loopback),
//! and wrong for anything else.

use std::io::{self, Read as _, Write as _};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

/// `relay` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct RelayArgs {
    /// Address to listen on.
    #[arg(long, env = "CHAT_BENCH_LISTEN", default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Where every accepted connection is relayed to.
    #[arg(long, env = "CHAT_BENCH_BACKEND")]
    pub backend: SocketAddr,
}

/// Read buffer, shared by every connection.
const BUFFER: usize = 16 * 1024;

/// How often [`Relay::run`] looks at its stop flag.
const STOP_CHECK: Duration = Duration::from_millis(100);

const LISTENER: Token = Token(0);

/// `chat-bench relay`: binds, prints `relay listening on ADDR`, and relays
/// until the process is killed.
pub fn serve(args: &RelayArgs) -> anyhow::Result<()> {
    let relay = Relay::bind(args.listen, args.backend)
        .with_context(|| format!("binding {}", args.listen))?;
    println!("relay listening on {}", relay.local_addr()?);
    io::stdout().flush()?;
    relay.run(&AtomicBool::new(false)).context("relay")
}

/// A bound relay; [`Relay::run`] serves it.
pub struct Relay {
    poll: Poll,
    listener: TcpListener,
    backend: SocketAddr,
    /// Connection `i` is `pairs[i]`: its client side, then its backend side.
    pairs: Vec<Option<[TcpStream; 2]>>,
    free: Vec<usize>,
}

/// The token of one side of one pair (0 is the listener).
fn token(pair: usize, side: usize) -> Token {
    Token(1 + 2 * pair + side)
}

/// The pair and side of a connection token.
fn pair_side(token: Token) -> (usize, usize) {
    ((token.0 - 1) / 2, (token.0 - 1) % 2)
}

impl Relay {
    /// Listens on `listen`; every accepted connection gets its own connection to `backend`.
    pub fn bind(listen: SocketAddr, backend: SocketAddr) -> io::Result<Self> {
        let poll = Poll::new()?;
        let mut listener = TcpListener::bind(listen)?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        Ok(Self {
            poll,
            listener,
            backend,
            pairs: Vec::new(),
            free: Vec::new(),
        })
    }

    /// The address the relay listens on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Relays until `stop` is set. A connection whose either side ends or fails is closed.
    pub fn run(mut self, stop: &AtomicBool) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let mut buf = vec![0u8; BUFFER];
        while !stop.load(Ordering::Relaxed) {
            self.turn(&mut events, &mut buf, STOP_CHECK)?;
        }
        Ok(())
    }

    /// Waits (at most `timeout`) for events, and does the work they bring.
    fn turn(&mut self, events: &mut Events, buf: &mut [u8], timeout: Duration) -> io::Result<()> {
        match self.poll.poll(events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(e),
        }
        for event in events.iter() {
            if event.token() == LISTENER {
                self.accept_all()?;
            } else {
                let (pair, side) = pair_side(event.token());
                if !self.forward(pair, side, buf, event.is_read_closed()) {
                    self.close(pair);
                }
            }
        }
        Ok(())
    }

    fn accept_all(&mut self) -> io::Result<()> {
        loop {
            let (client, _) = match self.listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // Out of files, say: this one waits in the backlog for the next event.
                Err(e) => {
                    eprintln!("chat-bench relay: accept: {e}");
                    return Ok(());
                }
            };
            match self.connect_backend() {
                Ok(backend) => self.add([client, backend])?,
                Err(e) => eprintln!("chat-bench relay: connecting {}: {e}", self.backend),
            }
        }
    }

    fn connect_backend(&self) -> io::Result<TcpStream> {
        // A blocking connect is immediate on loopback and keeps the loop simple.
        let stream = std::net::TcpStream::connect(self.backend)?;
        stream.set_nonblocking(true)?;
        Ok(TcpStream::from_std(stream))
    }

    fn add(&mut self, mut sides: [TcpStream; 2]) -> io::Result<()> {
        let pair = self.free.pop().unwrap_or_else(|| {
            self.pairs.push(None);
            self.pairs.len() - 1
        });
        for (side, stream) in sides.iter_mut().enumerate() {
            stream.set_nodelay(true)?;
            self.poll
                .registry()
                .register(stream, token(pair, side), Interest::READABLE)?;
        }
        self.pairs[pair] = Some(sides);
        Ok(())
    }

    /// Moves what `side` of `pair` has to its peer; false when the pair is done.
    /// `closed`: the event says the sender has finished (see [`drain`]).
    fn forward(&mut self, pair: usize, side: usize, buf: &mut [u8], closed: bool) -> bool {
        let Some(sides) = self.pairs.get_mut(pair).and_then(Option::as_mut) else {
            return true; // already closed earlier in this batch of events
        };
        let [a, b] = sides;
        let (from, to) = if side == 0 { (a, b) } else { (b, a) };
        matches!(
            drain(from, buf, closed, |bytes| write_all_spinning(to, bytes)),
            Ok(Drained::Empty)
        )
    }

    fn close(&mut self, pair: usize) {
        if let Some(mut sides) = self.pairs[pair].take() {
            for stream in &mut sides {
                let _ = self.poll.registry().deregister(stream);
            }
            self.free.push(pair);
        }
    }
}

/// Where [`drain`] stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum Drained {
    /// The socket has nothing more for now.
    Empty,
    /// The sender has finished: this socket is done.
    Ended,
}

/// Reads what a readable event announced into `buf`, handing each chunk to
/// `take`. A short read means the socket is empty, so one read is usually
/// all, unless `closed` (the event also says the sender has finished): then
/// no later event will come, so reading goes on to the end. An error from
/// `take` stops the reading and is returned.
pub fn drain(
    from: &mut TcpStream,
    buf: &mut [u8],
    closed: bool,
    mut take: impl FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<Drained> {
    loop {
        match from.read(buf) {
            Ok(0) => return Ok(Drained::Ended),
            Ok(n) => {
                take(&buf[..n])?;
                if n < buf.len() && !closed {
                    return Ok(Drained::Empty);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Drained::Empty),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Writes all of `bytes`, retrying at once while the socket is full.
fn write_all_spinning(to: &mut TcpStream, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        match to.write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn tokens_name_one_side_of_one_pair() {
        for pair in [0, 1, 7, 1000] {
            for side in [0, 1] {
                assert_ne!(token(pair, side), LISTENER);
                assert_eq!(pair_side(token(pair, side)), (pair, side));
            }
        }
    }

    #[test]
    fn relays_both_ways_and_closes_the_pair_when_one_side_ends() {
        let backend = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let relay = Relay::bind(
            "127.0.0.1:0".parse().unwrap(),
            backend.local_addr().unwrap(),
        )
        .unwrap();
        let addr = relay.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let running = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || relay.run(&stop))
        };
        let mut clients = Vec::new();
        let mut servers = Vec::new();
        for _ in 0..2 {
            clients.push(std::net::TcpStream::connect(addr).unwrap());
            servers.push(backend.accept().unwrap().0);
        }
        for (i, (client, server)) in clients.iter_mut().zip(&mut servers).enumerate() {
            // A message larger than the buffer takes more than one read.
            let up = vec![i as u8 + 1; BUFFER * 3 + 5];
            client.write_all(&up).unwrap();
            let mut got = vec![0u8; up.len()];
            server.read_exact(&mut got).unwrap();
            assert_eq!(got, up, "client {i} to its backend");
            server.write_all(b"pong").unwrap();
            let mut back = [0u8; 4];
            client.read_exact(&mut back).unwrap();
            assert_eq!(&back, b"pong");
        }
        // The first client leaves: its backend connection ends, the other pair goes on.
        drop(clients.remove(0));
        let mut rest = Vec::new();
        assert_eq!(servers[0].read_to_end(&mut rest).unwrap(), 0);
        clients[0].write_all(b"still").unwrap();
        let mut still = [0u8; 5];
        servers[1].read_exact(&mut still).unwrap();
        assert_eq!(&still, b"still");
        stop.store(true, Ordering::Relaxed);
        running.join().unwrap().unwrap();
    }

    #[test]
    fn a_last_message_that_arrives_with_the_end_is_still_passed_on() {
        let backend = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut relay = Relay::bind(
            "127.0.0.1:0".parse().unwrap(),
            backend.local_addr().unwrap(),
        )
        .unwrap();
        let (mut events, mut buf) = (Events::with_capacity(16), vec![0u8; BUFFER]);
        let mut client = std::net::TcpStream::connect(relay.local_addr().unwrap()).unwrap();
        relay
            .turn(&mut events, &mut buf, Duration::from_secs(5))
            .unwrap();
        let (mut server, _) = backend.accept().unwrap();
        // Loopback delivers as it sends: both are queued before the relay
        // looks again, so it sees them in one event.
        client.write_all(b"bye").unwrap();
        drop(client);
        for _ in 0..3 {
            relay
                .turn(&mut events, &mut buf, Duration::from_millis(50))
                .unwrap();
        }
        server
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let mut rest = Vec::new();
        server
            .read_to_end(&mut rest)
            .expect("the backend connection ends after the last message");
        assert_eq!(rest, b"bye");
    }
}
