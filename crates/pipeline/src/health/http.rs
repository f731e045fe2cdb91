//! The endpoints `/metrics`, `/healthz` and `/readyz`.

use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;

use super::Health;

impl Health {
    /// Serves the endpoints until `stop` is cancelled.
    pub async fn serve(
        self,
        addr: &str,
        stop: tokio_util::sync::CancellationToken,
    ) -> std::io::Result<()> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        tracing::info!(addr, "metrics and health endpoints listening");
        let h1 = self.clone();
        let h2 = self.clone();
        let app = Router::new()
            .route("/metrics", get(move || async move { h1.metrics.render() }))
            .route("/healthz", get(|| async { "ok" }))
            .route(
                "/readyz",
                get(move || async move {
                    match h2.not_ready() {
                        None => (StatusCode::OK, "ready".to_owned()),
                        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, why),
                    }
                }),
            );
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await
    }
}
