//! Retry with backoff for a dependency, reported in readiness and metrics.

use super::Health;

/// Retries `op` with exponential backoff (200 ms doubling to 10 s) while its
/// error is retryable, marking `dep` not-ready meanwhile; gives up on a
/// fatal error or when `stop` is cancelled.
pub async fn retry<T, E, F, Fut>(
    health: &Health,
    dep: &'static str,
    stop: &tokio_util::sync::CancellationToken,
    retryable: impl Fn(&E) -> bool,
    mut op: F,
) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let mut delay = std::time::Duration::from_millis(200);
    loop {
        match op().await {
            Ok(v) => {
                health.set(dep, None);
                return Ok(v);
            }
            Err(e) if retryable(&e) && !stop.is_cancelled() => {
                tracing::warn!(dependency = dep, error = %e, retry_in_ms = delay.as_millis() as u64, "dependency failed, retrying");
                health.set(dep, Some(e.to_string()));
                health.metrics.retries.with_label_values(&[dep]).inc();
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.cancelled() => return Err(e),
                }
                delay = (delay * 2).min(std::time::Duration::from_secs(10));
            }
            Err(e) => return Err(e),
        }
    }
}
