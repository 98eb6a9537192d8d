//! Waiting for conditions instead of for time.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// What a check passed to [`eventually`] may return: `true`, `Some(value)`
/// or `Ok(value)` means done; anything else means "not yet".
pub trait Attempt {
    /// What [`eventually`] returns once the check succeeds.
    type Output;
    /// `Err` carries a description of the last failure, for the panic message.
    fn into_outcome(self) -> Result<Self::Output, String>;
}

impl Attempt for bool {
    type Output = ();
    fn into_outcome(self) -> Result<(), String> {
        if self {
            Ok(())
        } else {
            Err("the condition was false".into())
        }
    }
}

impl<T> Attempt for Option<T> {
    type Output = T;
    fn into_outcome(self) -> Result<T, String> {
        self.ok_or_else(|| "the check returned None".into())
    }
}

impl<T, E: std::fmt::Debug> Attempt for Result<T, E> {
    type Output = T;
    fn into_outcome(self) -> Result<T, String> {
        self.map_err(|e| format!("{e:?}"))
    }
}

/// Runs `check` until it succeeds and returns its value; panics with the
/// last failure if it has not succeeded within `timeout`. The check runs at
/// least once, with short pauses (10 ms growing to 100 ms) in between.
pub async fn eventually<F, Fut, R>(timeout: Duration, check: F) -> R::Output
where
    F: FnMut() -> Fut,
    Fut: Future<Output = R>,
    R: Attempt,
{
    match try_eventually(timeout, check).await {
        Ok(value) => value,
        Err(last) => panic!("condition not met within {timeout:?}; last attempt: {last}"),
    }
}

/// Like [`eventually`] but returns the last failure instead of panicking.
pub async fn try_eventually<F, Fut, R>(timeout: Duration, mut check: F) -> Result<R::Output, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = R>,
    R: Attempt,
{
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(10);
    loop {
        let last = match check().await.into_outcome() {
            Ok(value) => return Ok(value),
            Err(last) => last,
        };
        if Instant::now() >= deadline {
            return Err(last);
        }
        tokio::time::sleep(pause.min(deadline.saturating_duration_since(Instant::now()))).await;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[tokio::test(start_paused = true)]
    async fn returns_the_value_once_the_check_succeeds() {
        let calls = Cell::new(0);
        let value = eventually(Duration::from_secs(1), || {
            calls.set(calls.get() + 1);
            let n = calls.get();
            async move { (n == 3).then_some(n * 10) }
        })
        .await;
        assert_eq!(value, 30);
        assert_eq!(calls.get(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_after_the_timeout_with_the_last_failure() {
        let started = Instant::now();
        let result = try_eventually(Duration::from_millis(500), || async {
            Err::<(), _>("not yet")
        })
        .await;
        assert_eq!(result, Err("\"not yet\"".to_owned()));
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(500) && waited < Duration::from_millis(700),
            "{waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "condition not met")]
    async fn eventually_panics_on_timeout() {
        eventually(Duration::from_millis(50), || async { false }).await;
    }

    #[tokio::test(start_paused = true)]
    async fn checks_at_least_once_even_with_zero_timeout() {
        try_eventually(Duration::ZERO, || async { true })
            .await
            .unwrap();
    }
}
