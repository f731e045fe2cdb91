//! Opening a connection with libpq's `sslmode` semantics.
//!
//! diesel-async connects through tokio-postgres, which knows only
//! `sslmode=disable|prefer|require` and, by default, no TLS at all. Managed
//! Postgres services hand out URLs with `sslmode=verify-full` and a CA file,
//! so this module reads the libpq TLS parameters from the URL itself, sets
//! up OpenSSL accordingly (the library rdkafka already links) and gives
//! tokio-postgres the rest, the way diesel-async documents for TLS
//! (`AsyncPgConnection::try_from_client_and_connection`).
//!
//! The modes behave as libpq's do:
//! - `disable`: no TLS;
//! - `allow`, `prefer` (the default when none is given): TLS if the server
//!   offers it, certificate not checked;
//! - `require`: TLS or no connection; certificate checked against
//!   `sslrootcert` only when one is given (libpq does the same);
//! - `verify-ca`: the chain must lead to `sslrootcert`;
//! - `verify-full`: that, and the certificate must name the host.
//!
//! `sslrootcert=system` trusts the system's CA store. `sslcert`/`sslkey`
//! present a client certificate.

use std::path::Path;
use std::str::FromStr;

use diesel::ConnectionError;
use diesel_async::AsyncPgConnection;
use openssl::ssl::{SslConnector, SslFiletype, SslMethod, SslVerifyMode};
use postgres_openssl::MakeTlsConnector;
use tokio_postgres::config::SslMode;

/// libpq's `sslmode` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// No TLS.
    Disable,
    /// TLS if offered (`allow` is treated the same: tokio-postgres tries
    /// TLS first either way).
    Prefer,
    /// TLS required; the certificate is checked only against an explicit
    /// `sslrootcert`.
    Require,
    /// TLS required; the chain must lead to `sslrootcert`.
    VerifyCa,
    /// As `VerifyCa`, and the certificate must name the host connected to.
    VerifyFull,
}

/// The TLS parameters of a connection URL, split from what tokio-postgres
/// parses itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsParams {
    /// `sslmode`.
    pub mode: TlsMode,
    /// `sslrootcert`: a CA file, or `system`.
    pub root_cert: Option<String>,
    /// `sslcert`: a client certificate.
    pub client_cert: Option<String>,
    /// `sslkey`: its key.
    pub client_key: Option<String>,
}

/// Splits `sslmode`, `sslrootcert`, `sslcert` and `sslkey` off a
/// `postgres://` URL. Returns the URL without them and the parameters; a
/// key=value connection string is passed through as it is.
pub fn split_tls_params(url: &str) -> Result<(String, TlsParams), ConnectionError> {
    let mut params = TlsParams {
        mode: TlsMode::Prefer,
        root_cert: None,
        client_cert: None,
        client_key: None,
    };
    let is_url = url.starts_with("postgres://") || url.starts_with("postgresql://");
    let Some((base, query)) = url.split_once('?').filter(|_| is_url) else {
        return Ok((url.to_string(), params));
    };
    // Pairs that are not ours are kept as written: re-encoding would turn
    // `%20` into `+`, which tokio-postgres does not read as a space.
    let mut kept: Vec<&str> = Vec::new();
    for raw in query.split('&').filter(|p| !p.is_empty()) {
        let Some((k, v)) = form_urlencoded::parse(raw.as_bytes()).next() else {
            continue;
        };
        match k.as_ref() {
            "sslmode" => {
                params.mode = match v.as_ref() {
                    "disable" => TlsMode::Disable,
                    "allow" | "prefer" => TlsMode::Prefer,
                    "require" => TlsMode::Require,
                    "verify-ca" => TlsMode::VerifyCa,
                    "verify-full" => TlsMode::VerifyFull,
                    other => {
                        return Err(ConnectionError::InvalidConnectionUrl(format!(
                            "sslmode={other}: expected disable, allow, prefer, require, \
                             verify-ca or verify-full"
                        )))
                    }
                }
            }
            "sslrootcert" => params.root_cert = Some(v.into_owned()),
            "sslcert" => params.client_cert = Some(v.into_owned()),
            "sslkey" => params.client_key = Some(v.into_owned()),
            _ => kept.push(raw),
        }
    }
    let rest = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((rest, params))
}

impl TlsParams {
    /// What tokio-postgres negotiates.
    fn ssl_mode(&self) -> SslMode {
        match self.mode {
            TlsMode::Disable => SslMode::Disable,
            TlsMode::Prefer => SslMode::Prefer,
            TlsMode::Require | TlsMode::VerifyCa | TlsMode::VerifyFull => SslMode::Require,
        }
    }

    /// libpq checks the chain under `require` too once a root certificate
    /// is named.
    fn verifies_chain(&self) -> bool {
        match self.mode {
            TlsMode::Disable | TlsMode::Prefer => false,
            TlsMode::Require => self.root_cert.is_some(),
            TlsMode::VerifyCa | TlsMode::VerifyFull => true,
        }
    }

    /// The OpenSSL side of the connection.
    fn connector(&self) -> Result<MakeTlsConnector, ConnectionError> {
        let bad = |what: &str, e: openssl::error::ErrorStack| {
            ConnectionError::BadConnection(format!("postgres TLS: {what}: {e}"))
        };
        let mut b = SslConnector::builder(SslMethod::tls_client()).map_err(|e| bad("setup", e))?;
        if self.verifies_chain() {
            match self.root_cert.as_deref() {
                Some("system") => b
                    .set_default_verify_paths()
                    .map_err(|e| bad("system CA store", e))?,
                Some(file) => b
                    .set_ca_file(file)
                    .map_err(|e| bad(&format!("reading sslrootcert {file}"), e))?,
                None => {
                    return Err(ConnectionError::InvalidConnectionUrl(format!(
                        "sslmode={} needs sslrootcert=<CA file> (or sslrootcert=system)",
                        if self.mode == TlsMode::VerifyCa {
                            "verify-ca"
                        } else {
                            "verify-full"
                        }
                    )))
                }
            }
            b.set_verify(SslVerifyMode::PEER);
        } else {
            b.set_verify(SslVerifyMode::NONE);
        }
        match (&self.client_cert, &self.client_key) {
            (Some(cert), Some(key)) => {
                b.set_certificate_chain_file(cert)
                    .map_err(|e| bad(&format!("reading sslcert {cert}"), e))?;
                b.set_private_key_file(Path::new(key), SslFiletype::PEM)
                    .map_err(|e| bad(&format!("reading sslkey {key}"), e))?;
            }
            (None, None) => {}
            _ => {
                return Err(ConnectionError::InvalidConnectionUrl(
                    "sslcert and sslkey go together".into(),
                ))
            }
        }
        let mut tls = MakeTlsConnector::new(b.build());
        let full = self.mode == TlsMode::VerifyFull;
        let verify = self.verifies_chain();
        tls.set_callback(move |c, _host| {
            c.set_verify_hostname(full);
            if !verify {
                c.set_verify(SslVerifyMode::NONE);
            }
            Ok(())
        });
        Ok(tls)
    }
}

/// Opens a connection to `url`, honouring its libpq TLS parameters. Errors
/// name the host and port, never the credentials.
pub async fn establish(url: &str) -> Result<AsyncPgConnection, ConnectionError> {
    let (client, connection) = connect(url).await?;
    AsyncPgConnection::try_from_client_and_connection(client, connection).await
}

/// A plain tokio-postgres client for `url`, with the same TLS handling, for
/// what diesel-async cannot do (binary `COPY`, which `make bench` uses as
/// the ceiling of what Postgres absorbs). The connection is driven by a
/// spawned task that ends when the client is dropped.
pub async fn raw_client(url: &str) -> Result<tokio_postgres::Client, ConnectionError> {
    let (client, connection) = connect(url).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %novyra_core::error_chain(&e), "postgres connection ended");
        }
    });
    Ok(client)
}

/// The task side of a connection `connect` opens (TLS or not).
type Connection = tokio_postgres::Connection<
    tokio_postgres::Socket,
    postgres_openssl::TlsStream<tokio_postgres::Socket>,
>;

async fn connect(url: &str) -> Result<(tokio_postgres::Client, Connection), ConnectionError> {
    let (rest, tls) = split_tls_params(url)?;
    let mut config = tokio_postgres::Config::from_str(&rest)
        .map_err(|e| ConnectionError::InvalidConnectionUrl(e.to_string()))?;
    config.ssl_mode(tls.ssl_mode());
    let server = server_name(&config);
    config.connect(tls.connector()?).await.map_err(|e| {
        ConnectionError::BadConnection(format!(
            "postgres at {server}: {}",
            novyra_core::error_chain(&e)
        ))
    })
}

/// `host:port` of the first server in `config`, for error messages.
fn server_name(config: &tokio_postgres::Config) -> String {
    use tokio_postgres::config::Host;
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_parameters_are_split_off_and_the_rest_kept() {
        let (rest, p) = split_tls_params(
            "postgres://u:p@db:5432/novyra?sslmode=verify-full&application_name=x\
             &sslrootcert=%2Fetc%2Fca.crt&options=-c%20search_path%3Dx",
        )
        .expect("parse");
        assert_eq!(
            rest,
            "postgres://u:p@db:5432/novyra?application_name=x&options=-c%20search_path%3Dx"
        );
        assert_eq!(p.mode, TlsMode::VerifyFull);
        assert_eq!(p.root_cert.as_deref(), Some("/etc/ca.crt"));
        assert!(p.verifies_chain());

        let (rest, p) = split_tls_params("postgres://db/novyra").expect("parse");
        assert_eq!(rest, "postgres://db/novyra");
        assert_eq!(p.mode, TlsMode::Prefer);
        assert!(!p.verifies_chain());
    }

    #[test]
    fn require_verifies_only_with_a_root_certificate() {
        let (_, p) = split_tls_params("postgres://db/x?sslmode=require").expect("parse");
        assert!(!p.verifies_chain());
        let (_, p) =
            split_tls_params("postgres://db/x?sslmode=require&sslrootcert=ca.crt").expect("parse");
        assert!(p.verifies_chain());
    }

    #[test]
    fn bad_values_name_the_key() {
        let e = split_tls_params("postgres://db/x?sslmode=verify_full")
            .expect_err("bad mode")
            .to_string();
        assert!(e.contains("sslmode=verify_full"), "{e}");
        let (_, p) = split_tls_params("postgres://db/x?sslmode=verify-ca").expect("parse");
        let e = p.connector().err().expect("no CA").to_string();
        assert!(e.contains("sslrootcert"), "{e}");
    }
}
