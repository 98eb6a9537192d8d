//! Test support: small TCP backends, a balancer started through the library `run` or as the
//! real binary, clients from chosen source addresses, and thin wrappers over
//! `chat-test-support`'s generic helpers (`eventually`, `http_get`, `metric_value`; it is only
//! a dev-dependency: the balancer itself depends on no chat crate).
// Each test binary uses a different part of this module.
#![allow(
    dead_code,
    reason = "each test binary uses a different part of this module"
)]

use std::collections::BTreeMap;
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chat_lb::{Config, HealthConfig, Signals};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

/// Upper bound for any single wait in a test.
pub(crate) const PATIENCE: Duration = Duration::from_secs(10);

/// Polls `check` until it returns true; panics with `what` after [`PATIENCE`].
pub(crate) async fn eventually<F, Fut>(what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    if let Err(last) = chat_test_support::try_eventually(PATIENCE, check).await {
        panic!("timed out waiting for: {what} ({last})");
    }
}

/// The PROXY v2 signature, written out here independently of the crate.
pub(crate) const PROXY_V2_SIGNATURE: &[u8; 12] =
    b"\x0d\x0a\x0d\x0a\x00\x0d\x0a\x51\x55\x49\x54\x0a";

/// A backend that answers `GET /healthz` with its configured status and, for any other
/// first bytes, writes its name and a newline, echoes everything, and after the client's EOF
/// writes `bye\n` and closes. A PROXY v2 header in front of either is recorded and stripped.
/// Started with a limit, it behaves like a gateway with `--max-connections`: a connection
/// accepted while that many are open (health checks included) is closed at once.
pub(crate) struct TestBackend {
    pub name: String,
    pub addr: SocketAddr,
    state: Arc<BackendState>,
    task: JoinHandle<()>,
}

#[derive(Default)]
struct BackendState {
    status: AtomicU16,
    /// Connections open at once beyond which new ones are closed; 0 for no limit.
    limit: usize,
    /// Connections accepted, of any kind.
    accepted: AtomicUsize,
    /// Connections open now.
    open: AtomicUsize,
    /// Connections closed at once because `limit` were open.
    refused: AtomicUsize,
    data_connections: AtomicUsize,
    health_checks: AtomicUsize,
    proxy_headers: Mutex<Vec<Vec<u8>>>,
}

impl TestBackend {
    pub(crate) async fn start(name: &str) -> Self {
        Self::start_on(name, "127.0.0.1:0".parse().unwrap()).await
    }

    /// A backend that holds at most `limit` connections at once.
    pub(crate) async fn start_with_limit(name: &str, limit: usize) -> Self {
        Self::bind(name, "127.0.0.1:0".parse().unwrap(), limit).await
    }

    /// Binds `addr` (with SO_REUSEADDR, so a stopped backend can come back on its port).
    pub(crate) async fn start_on(name: &str, addr: SocketAddr) -> Self {
        Self::bind(name, addr, 0).await
    }

    async fn bind(name: &str, addr: SocketAddr, limit: usize) -> Self {
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_reuseaddr(true).unwrap();
        socket.bind(addr).unwrap();
        let listener = socket.listen(1024).unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(BackendState {
            status: AtomicU16::new(200),
            limit,
            ..BackendState::default()
        });
        let task = tokio::spawn(accept_loop(listener, name.to_owned(), Arc::clone(&state)));
        Self {
            name: name.to_owned(),
            addr,
            state,
            task,
        }
    }

    /// Stops listening and drops every open connection; returns the address for a restart.
    pub(crate) async fn stop(self) -> SocketAddr {
        self.task.abort();
        let _ = self.task.await;
        self.addr
    }

    pub(crate) fn set_health_status(&self, status: u16) {
        self.state.status.store(status, Ordering::SeqCst);
    }

    /// Connections that sent something other than a health check (whole or in part).
    pub(crate) fn data_connections(&self) -> usize {
        self.state.data_connections.load(Ordering::SeqCst)
    }

    /// Connections accepted, of any kind.
    pub(crate) fn accepted(&self) -> usize {
        self.state.accepted.load(Ordering::SeqCst)
    }

    /// Connections closed at once because the limit was reached.
    pub(crate) fn refused(&self) -> usize {
        self.state.refused.load(Ordering::SeqCst)
    }

    pub(crate) fn health_checks(&self) -> usize {
        self.state.health_checks.load(Ordering::SeqCst)
    }

    pub(crate) fn proxy_headers(&self) -> Vec<Vec<u8>> {
        self.state.proxy_headers.lock().unwrap().clone()
    }

    pub(crate) fn addr_string(&self) -> String {
        self.addr.to_string()
    }
}

async fn accept_loop(listener: TcpListener, name: String, state: Arc<BackendState>) {
    // Owned here so aborting this task closes every connection of the backend too.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                state.accepted.fetch_add(1, Ordering::SeqCst);
                if state.limit != 0 && state.open.load(Ordering::SeqCst) >= state.limit {
                    state.refused.fetch_add(1, Ordering::SeqCst);
                    drop(stream);
                    continue;
                }
                state.open.fetch_add(1, Ordering::SeqCst);
                let state = Arc::clone(&state);
                let name = name.clone();
                connections.spawn(async move {
                    serve(stream, name, Arc::clone(&state)).await;
                    state.open.fetch_sub(1, Ordering::SeqCst);
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn serve(mut stream: TcpStream, name: String, state: Arc<BackendState>) {
    const HEALTH: &[u8] = b"GET /healthz";
    let mut buf = Vec::new();
    let mut proxy_done = false;
    loop {
        if !proxy_done {
            let n = buf.len().min(12);
            if buf[..n] != PROXY_V2_SIGNATURE[..n] {
                proxy_done = true;
            } else if buf.len() >= 16 {
                let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
                if buf.len() >= 16 + len {
                    let header: Vec<u8> = buf.drain(..16 + len).collect();
                    state.proxy_headers.lock().unwrap().push(header);
                    proxy_done = true;
                }
            }
        }
        if proxy_done {
            let n = buf.len().min(HEALTH.len());
            if buf.len() >= HEALTH.len() && buf.starts_with(HEALTH) {
                state.health_checks.fetch_add(1, Ordering::SeqCst);
                let status = state.status.load(Ordering::SeqCst);
                let response = format!(
                    "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                let _ = stream.write_all(response.as_bytes()).await;
                return;
            }
            if buf[..n] != HEALTH[..n] {
                state.data_connections.fetch_add(1, Ordering::SeqCst);
                break;
            }
        }
        let mut chunk = [0u8; 1024];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let mut reply = format!("{name}\n").into_bytes();
    reply.extend_from_slice(&buf);
    if stream.write_all(&reply).await.is_err() {
        return;
    }
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk).await {
            Ok(0) => break,
            Ok(n) => {
                if stream.write_all(&chunk[..n]).await.is_err() {
                    return;
                }
            }
            Err(_) => return,
        }
    }
    let _ = stream.write_all(b"bye\n").await;
    let _ = stream.shutdown().await;
}

/// Reads up to and including the next `\n`; `None` on EOF or error before it.
pub(crate) async fn read_line(stream: &mut TcpStream) -> Option<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match timeout(PATIENCE, stream.read(&mut byte)).await {
            Ok(Ok(1)) if byte[0] == b'\n' => return Some(String::from_utf8(line).unwrap()),
            Ok(Ok(1)) => line.push(byte[0]),
            Ok(_) => return None,
            Err(_) => panic!("no line within {PATIENCE:?}"),
        }
    }
}

/// A relayed client connection that stays open.
pub(crate) struct Client {
    pub stream: TcpStream,
    /// Name of the backend the balancer chose.
    pub backend: String,
}

impl Client {
    /// Connects through the balancer and learns which backend answers; `None` if the
    /// balancer closed the connection instead.
    pub(crate) async fn open(lb: SocketAddr) -> Option<Self> {
        Self::open_from(None, lb).await
    }

    /// [`Client::open`] from a chosen source address (any of 127.0.0.0/8 works on loopback).
    pub(crate) async fn open_from(source: Option<IpAddr>, lb: SocketAddr) -> Option<Self> {
        let mut stream = connect_from(source, lb).await.ok()?;
        stream.write_all(b"hi\n").await.ok()?;
        let backend = read_line(&mut stream).await?;
        assert_eq!(read_line(&mut stream).await.as_deref(), Some("hi"));
        Some(Self { stream, backend })
    }

    /// Sends a line and expects it back.
    pub(crate) async fn echo(&mut self, text: &str) {
        self.stream
            .write_all(format!("{text}\n").as_bytes())
            .await
            .unwrap();
        assert_eq!(read_line(&mut self.stream).await.as_deref(), Some(text));
    }
}

/// A TCP connection to `addr` from `source` (the OS picks when `None`).
pub(crate) async fn connect_from(
    source: Option<IpAddr>,
    addr: SocketAddr,
) -> std::io::Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(ip) = source {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    socket.connect(addr).await
}

/// `127.0.0.n`, a loopback address of its own: a client source the balancer tells apart.
pub(crate) fn loopback(n: u8) -> Option<IpAddr> {
    Some(IpAddr::from([127, 0, 0, n]))
}

/// Reads until EOF; `true` if the peer closed (a reset counts as closed too), `false` if it
/// was still open after [`PATIENCE`].
pub(crate) async fn closed_by_peer(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    loop {
        match timeout(PATIENCE, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

/// One connection through the balancer; returns the name of the backend that served it.
pub(crate) async fn identify(lb: SocketAddr) -> Option<String> {
    Client::open(lb).await.map(|c| c.backend)
}

/// Makes `n` sequential connections and counts them per backend name.
pub(crate) async fn spread(lb: SocketAddr, n: usize) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for i in 0..n {
        let name = identify(lb)
            .await
            .unwrap_or_else(|| panic!("connection {i} of {n} was closed by the balancer"));
        *counts.entry(name).or_default() += 1;
    }
    counts
}

pub(crate) fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
}

/// Settings with short health intervals, so state changes show up within a second.
pub(crate) fn config(backends: &[&TestBackend]) -> Config {
    Config {
        backends: backends.iter().map(|b| b.addr_string()).collect(),
        connect_timeout: Duration::from_secs(2),
        health: HealthConfig {
            interval: Duration::from_millis(100),
            timeout: Duration::from_secs(2),
            fall: 2,
            rise: 2,
            mode: chat_lb::HealthMode::Http,
        },
        drain_timeout: Duration::from_secs(5),
        ..Config::default()
    }
}

/// A balancer running in this process through the library `run`.
pub(crate) struct Lb {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    shutdown: CancellationToken,
    pub reload: mpsc::Sender<()>,
    task: JoinHandle<Result<(), chat_lb::Error>>,
}

impl Lb {
    pub(crate) async fn start(config: Config) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (addr, admin_addr) = (listener.local_addr().unwrap(), admin.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let (reload, reload_rx) = mpsc::channel(1);
        let signals = Signals::new(shutdown.clone().cancelled_owned(), reload_rx);
        let task = tokio::spawn(chat_lb::run(listener, admin, config, signals));
        Self {
            addr,
            admin: admin_addr,
            shutdown,
            reload,
            task,
        }
    }

    pub(crate) async fn metrics(&self) -> Metrics {
        Metrics(http_get(self.admin, "/metrics").await.1)
    }

    /// Asks for shutdown without waiting for it.
    pub(crate) fn begin_shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Waits for `run` to return and checks that it returned `Ok`.
    pub(crate) async fn finished(self) {
        timeout(PATIENCE, self.task)
            .await
            .expect("run did not return")
            .expect("run panicked")
            .expect("run failed");
    }

    pub(crate) async fn stop(self) {
        self.begin_shutdown();
        self.finished().await;
    }
}

/// A minimal HTTP/1.1 GET; returns the status code and body.
pub(crate) async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    chat_test_support::http_get(addr, path)
        .await
        .unwrap_or_else(|err| panic!("GET {path} on {addr}: {err}"))
}

/// A `/metrics` scrape.
pub(crate) struct Metrics(pub String);

impl Metrics {
    /// The value of the sample with exactly these labels, in this order.
    pub(crate) fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<u64> {
        let mut key = name.to_owned();
        if !labels.is_empty() {
            let inner: Vec<_> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
            key = format!("{key}{{{}}}", inner.join(","));
        }
        chat_test_support::metric_value(&self.0, &key).map(|value| value as u64)
    }

    pub(crate) fn backend(&self, name: &str, backend: &TestBackend) -> Option<u64> {
        self.get(name, &[("backend", &backend.addr_string())])
    }
}

/// A running `chat-lb` process, killed when dropped (a failing test leaves no process behind).
pub(crate) struct Binary {
    pub child: Child,
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
}

impl Binary {
    /// Starts the binary on ephemeral loopback ports and waits for its "listening" log line,
    /// which carries the bound addresses.
    pub(crate) fn start(args: &[&str]) -> Self {
        Self::start_with("127.0.0.1:0", None, args)
    }

    /// [`Binary::start`] listening on `listen` and, if given, allowed at most
    /// `max_open_files` file descriptors (`ulimit -n`).
    pub(crate) fn start_with(listen: &str, max_open_files: Option<u32>, args: &[&str]) -> Self {
        let bin = env!("CARGO_BIN_EXE_chat-lb");
        let mut command = match max_open_files {
            None => Command::new(bin),
            Some(limit) => {
                let mut sh = Command::new("sh");
                sh.args([
                    "-c",
                    &format!("ulimit -n {limit} && exec \"$0\" \"$@\""),
                    bin,
                ]);
                sh
            }
        };
        let mut child = command
            .args(["--listen", listen, "--admin-listen", "127.0.0.1:0"])
            .args(["--log-format", "json"])
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start chat-lb");
        let stderr = child.stderr.take().unwrap();
        // Owned by the guard from here on, so a failed start kills the process too.
        let unknown = SocketAddr::from(([0, 0, 0, 0], 0));
        let mut binary = Self {
            child,
            proxy: unknown,
            admin: unknown,
        };
        let (tx, lines) = std::sync::mpsc::channel();
        // Keeps draining stderr so the child never blocks on a full pipe; ends with the child.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("chat-lb: {line}");
                let _ = tx.send(line);
            }
        });
        let deadline = std::time::Instant::now() + PATIENCE;
        loop {
            let wait = deadline.saturating_duration_since(std::time::Instant::now());
            let line = lines.recv_timeout(wait).expect("no \"listening\" log line");
            let Ok(entry) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            let fields = &entry["fields"];
            if fields["message"] == "listening" {
                let addr = |key: &str| fields[key].as_str().unwrap().parse().unwrap();
                binary.proxy = addr("proxy");
                binary.admin = addr("admin");
                return binary;
            }
        }
    }

    pub(crate) fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap());
        nix::sys::signal::kill(pid, signal).unwrap();
    }

    pub(crate) async fn metrics(&self) -> Metrics {
        Metrics(http_get(self.admin, "/metrics").await.1)
    }

    /// The balancer's address as a client on loopback reaches it (a `[::]` or `0.0.0.0`
    /// listener is reached through `::1` or `127.0.0.1`).
    pub(crate) fn proxy_from(&self, ip: IpAddr) -> SocketAddr {
        SocketAddr::new(ip, self.proxy.port())
    }

    pub(crate) async fn exit_status(&mut self) -> ExitStatus {
        let mut status = None;
        eventually("chat-lb exits", || {
            status = self.child.try_wait().unwrap();
            std::future::ready(status.is_some())
        })
        .await;
        status.unwrap()
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
