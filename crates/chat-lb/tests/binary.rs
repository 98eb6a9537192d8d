//! The real `chat-lb` binary: SIGHUP reload, SIGTERM drain, exit code 64 on bad configuration.

mod support;

use std::path::Path;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use support::{counts, eventually, http_get, spread, Binary, Client, TestBackend, PATIENCE};
use tokio::net::TcpStream;

/// Replaces the file in one step, so a reload never reads half of it.
fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn backends_toml(backends: &[&TestBackend]) -> String {
    let list: Vec<_> = backends
        .iter()
        .map(|b| format!("\"{}\"", b.addr_string()))
        .collect();
    format!(
        "backends = [{}]\nhealth-interval = \"100ms\"\n",
        list.join(", ")
    )
}

#[tokio::test]
async fn sighup_applies_backend_changes_and_keeps_established_connections() {
    let (a, b, c) = (
        TestBackend::start("a").await,
        TestBackend::start("b").await,
        TestBackend::start("c").await,
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lb.toml");
    write_atomically(&path, &backends_toml(&[&a, &b]));
    let lb = Binary::start(&["--config", path.to_str().unwrap()]);
    let mut kept = Client::open(lb.proxy).await.expect("relayed");
    assert_eq!(kept.backend, "a", "round-robin starts at the first backend");

    write_atomically(&path, &backends_toml(&[&b, &c]));
    lb.signal(Signal::SIGHUP);
    eventually("a removed and c added", || async {
        let metrics = lb.metrics().await;
        metrics.backend("chat_lb_backend_up", &a).is_none()
            && metrics.backend("chat_lb_backend_up", &c) == Some(1)
    })
    .await;
    let reloads = |result| [("result", result)];
    let metrics = lb.metrics().await;
    assert_eq!(
        metrics.get("chat_lb_config_reloads_total", &reloads("success")),
        Some(1)
    );
    assert_eq!(spread(lb.proxy, 10).await, counts(&[("b", 5), ("c", 5)]));
    kept.echo("still relayed to a removed backend").await;

    // A broken file is refused and changes nothing.
    write_atomically(&path, "backends = [\n");
    lb.signal(Signal::SIGHUP);
    eventually("failed reload counted", || async {
        lb.metrics()
            .await
            .get("chat_lb_config_reloads_total", &reloads("failure"))
            == Some(1)
    })
    .await;
    assert_eq!(spread(lb.proxy, 10).await, counts(&[("b", 5), ("c", 5)]));
    kept.echo("and after a failed reload").await;
    assert_eq!(a.data_connections(), 1);
}

#[tokio::test]
async fn sigterm_drains_established_connections_then_exits_zero() {
    let a = TestBackend::start("a").await;
    let mut lb = Binary::start(&["--backend", &a.addr_string(), "--drain-timeout", "20s"]);
    let mut client = Client::open(lb.proxy).await.expect("relayed");

    lb.signal(Signal::SIGTERM);
    eventually("new connections refused", || async {
        TcpStream::connect(lb.proxy).await.is_err()
    })
    .await;
    assert_eq!(http_get(lb.admin, "/healthz").await.0, 503);
    client.echo("relayed while draining").await;
    assert!(
        lb.child.try_wait().unwrap().is_none(),
        "exited with a connection open"
    );

    let closed = Instant::now();
    drop(client);
    let status = lb.exit_status().await;
    assert_eq!(status.code(), Some(0));
    assert!(
        closed.elapsed() < Duration::from_secs(5),
        "waited for the drain timeout although no connection was left"
    );
}

/// Runs the binary to its exit (killing it after [`PATIENCE`]) and returns status and stderr.
async fn run_to_exit(args: &[&str]) -> (ExitStatus, String) {
    let mut all = vec!["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"];
    all.extend_from_slice(args);
    let output = chat_test_support::run_to_exit(env!("CARGO_BIN_EXE_chat-lb"), &all, PATIENCE)
        .await
        .unwrap_or_else(|err| panic!("chat-lb {args:?}: {err}"));
    (
        output.status,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn invalid_configuration_exits_64_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let unknown_key = dir.path().join("unknown.toml");
    std::fs::write(&unknown_key, "backends = [\"127.0.0.1:1\"]\nbackend = 1\n").unwrap();
    let unknown_key = unknown_key.to_str().unwrap();
    let missing = dir.path().join("missing.toml");
    let missing = missing.to_str().unwrap();
    let cases: &[&[&str]] = &[
        &[],
        &["--backend", "no-port"],
        &["--backend", "127.0.0.1:1", "--fall", "0"],
        &["--backend", "127.0.0.1:1", "--connect-timeout", "soon"],
        &[
            "--backend",
            "127.0.0.1:1",
            "--client-first-byte-timeout",
            "0s",
        ],
        &["--backend", "127.0.0.1:1", "--conn-burst-per-source", "0"],
        &["--backend", "127.0.0.1:1", "--max-conns-per-source", "-1"],
        &["--backend", "127.0.0.1:1", "--backend", "127.0.0.1:1"],
        &["--backend", "127.0.0.1:1", "--config", unknown_key],
        &["--config", unknown_key],
        &["--config", missing],
    ];
    for args in cases {
        let (status, stderr) = run_to_exit(args).await;
        assert_eq!(status.code(), Some(64), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(
            stderr.starts_with("chat-lb: invalid configuration: "),
            "{args:?}: {stderr}"
        );
    }
}
