//! Backend choice: round-robin, active and passive health checks, draining, readmission.

mod support;

use std::time::Duration;

use support::{counts, eventually, identify, spread, Lb, TestBackend};

const UP: &str = "chat_lb_backend_up";
const CONNECT_FAILURES: &str = "chat_lb_backend_connect_failures_total";
const HEALTH_CHECKS: &str = "chat_lb_backend_health_checks_total";

async fn three() -> (TestBackend, TestBackend, TestBackend) {
    (
        TestBackend::start("a").await,
        TestBackend::start("b").await,
        TestBackend::start("c").await,
    )
}

async fn is_up(lb: &Lb, backend: &TestBackend) -> bool {
    lb.metrics().await.backend(UP, backend) == Some(1)
}

#[tokio::test]
async fn round_robin_spreads_connections_exactly_evenly() {
    let (a, b, c) = three().await;
    let lb = Lb::start(support::config(&[&a, &b, &c])).await;

    let seen = spread(lb.addr, 300).await;

    assert_eq!(seen, counts(&[("a", 100), ("b", 100), ("c", 100)]));
    for backend in [&a, &b, &c] {
        assert_eq!(backend.data_connections(), 100, "backend {}", backend.name);
    }
    let metrics = lb.metrics().await;
    for backend in [&a, &b, &c] {
        assert_eq!(
            metrics.backend("chat_lb_backend_connections_total", backend),
            Some(100)
        );
    }
    assert_eq!(
        metrics.get("chat_lb_connections_accepted_total", &[]),
        Some(300)
    );
    lb.stop().await;
}

#[tokio::test]
async fn stopped_backend_goes_down_after_fall_checks_and_gets_no_connections() {
    let (a, b, c) = three().await;
    let lb = Lb::start(support::config(&[&a, &b, &c])).await;
    let b_addr = b.addr_string();
    b.stop().await;

    // No client traffic: only the active checks can take it down.
    eventually("b marked down by health checks", || async {
        lb.metrics().await.get(UP, &[("backend", &b_addr)]) == Some(0)
    })
    .await;
    let metrics = lb.metrics().await;
    let failures = metrics
        .get(
            HEALTH_CHECKS,
            &[("backend", &b_addr), ("result", "failure")],
        )
        .unwrap();
    assert!(
        failures >= 2,
        "down after {failures} failed checks, fall is 2"
    );

    assert_eq!(spread(lb.addr, 30).await, counts(&[("a", 15), ("c", 15)]));
    let metrics = lb.metrics().await;
    assert_eq!(
        metrics.get(CONNECT_FAILURES, &[("backend", &b_addr)]),
        Some(0),
        "a connection was attempted to a backend that was down"
    );
    lb.stop().await;
}

#[tokio::test]
async fn failed_connect_fails_over_and_marks_the_backend_down_at_once() {
    let (a, b, c) = three().await;
    let mut config = support::config(&[&a, &b, &c]);
    // Only the start-up check runs during the test: the passive check must do the work.
    config.health.interval = Duration::from_secs(60);
    let lb = Lb::start(config).await;
    eventually("start-up health checks", || async {
        a.health_checks() > 0 && b.health_checks() > 0 && c.health_checks() > 0
    })
    .await;
    let b_addr = b.addr_string();
    b.stop().await;

    let seen = spread(lb.addr, 30).await;

    assert_eq!(seen.values().sum::<usize>(), 30);
    assert!(!seen.contains_key("b"));
    let metrics = lb.metrics().await;
    assert_eq!(
        metrics.get(CONNECT_FAILURES, &[("backend", &b_addr)]),
        Some(1)
    );
    assert_eq!(metrics.get(UP, &[("backend", &b_addr)]), Some(0));
    lb.stop().await;
}

#[tokio::test]
async fn restarted_backend_is_readmitted_after_rise_checks() {
    let (a, b, c) = three().await;
    let lb = Lb::start(support::config(&[&a, &b, &c])).await;
    let b_addr = b.stop().await;
    let label = b_addr.to_string();
    eventually("b down", || async {
        lb.metrics().await.get(UP, &[("backend", &label)]) == Some(0)
    })
    .await;
    assert_eq!(spread(lb.addr, 10).await, counts(&[("a", 5), ("c", 5)]));

    let b = TestBackend::start_on("b", b_addr).await;
    eventually("b up again", || is_up(&lb, &b)).await;
    let successes = lb
        .metrics()
        .await
        .get(HEALTH_CHECKS, &[("backend", &label), ("result", "success")])
        .unwrap();
    assert!(
        successes >= 2,
        "up after {successes} good checks, rise is 2"
    );

    assert_eq!(
        spread(lb.addr, 30).await,
        counts(&[("a", 10), ("b", 10), ("c", 10)])
    );
    lb.stop().await;
}

#[tokio::test]
async fn backend_answering_503_gets_no_new_connections() {
    let (a, b, c) = three().await;
    b.set_health_status(503);
    let lb = Lb::start(support::config(&[&a, &b, &c])).await;
    eventually("draining b marked down", || async { !is_up(&lb, &b).await }).await;

    assert_eq!(spread(lb.addr, 30).await, counts(&[("a", 15), ("c", 15)]));
    assert_eq!(b.data_connections(), 0);

    b.set_health_status(200);
    eventually("b back after answering 200", || is_up(&lb, &b)).await;
    assert_eq!(
        spread(lb.addr, 30).await,
        counts(&[("a", 10), ("b", 10), ("c", 10)])
    );
    lb.stop().await;
}

#[tokio::test]
async fn client_is_closed_and_counted_when_no_backend_accepts() {
    let a = TestBackend::start("a").await;
    let lb = Lb::start(support::config(&[&a])).await;
    a.stop().await;

    assert_eq!(identify(lb.addr).await, None);
    let metrics = lb.metrics().await;
    assert_eq!(
        metrics.get(
            "chat_lb_connections_rejected_total",
            &[("reason", "no_backend")]
        ),
        Some(1)
    );
    lb.stop().await;
}
