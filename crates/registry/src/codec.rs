//! Encoding and decoding of events through the registry.
//!
//! Schemas are cached by id inside `schema_registry_converter`; a fetch that
//! failed for a passing reason (registry down) is never cached and surfaces
//! as [`DecodeError::Unavailable`], so the caller retries instead of sending
//! good data to the DLQ.

use std::time::Duration;

use apache_avro::types::Value;
use schema_registry_converter::async_impl::avro::{AvroDecoder, AvroEncoder};
use schema_registry_converter::async_impl::schema_registry::SrSettings;
use schema_registry_converter::error::SRCError;
use schema_registry_converter::schema_registry_common::{
    SchemaType, SubjectNameStrategy, SuppliedSchema,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::wire::{self, HeaderError};
use crate::EventKind;

/// Where the registry is and how to authenticate.
#[derive(Clone)]
pub struct RegistryConfig {
    /// Base URL of the Confluent-compatible API (for Apicurio, `.../apis/ccompat/v7`).
    pub url: String,
    /// Basic-auth user, if the registry wants one.
    pub username: Option<String>,
    /// Basic-auth password; never logged.
    pub password: Option<String>,
    /// Per-request timeout.
    pub timeout: Duration,
    /// A CA certificate (PEM, may hold several) to trust for an `https://`
    /// registry besides the system's roots: a private registry's CA is
    /// rarely in them.
    pub ca_file: Option<std::path::PathBuf>,
}

/// The password never reaches a log, even through `{:?}`.
impl std::fmt::Debug for RegistryConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryConfig")
            .field("url", &self.url)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

impl RegistryConfig {
    /// An unauthenticated registry at `url` with a 10 s timeout.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            username: None,
            password: None,
            timeout: Duration::from_secs(10),
            ca_file: None,
        }
    }
}

/// Why an event could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// The registry could not be reached or refused the schema.
    #[error("registry: {0}")]
    Registry(String),
    /// The registry client could not be configured.
    #[error("registry client: {0}")]
    Config(String),
}

impl EncodeError {
    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, EncodeError::Registry(_))
    }
}

/// Why a payload could not be decoded. Every variant but `Unavailable` is
/// the payload's fault and sends it to the DLQ; `Unavailable` is retried.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The Confluent header is missing or wrong.
    #[error(transparent)]
    Header(#[from] HeaderError),
    /// The registry does not know the schema id.
    #[error("unknown schema id {id}: {detail}")]
    UnknownSchema {
        /// The id from the header.
        id: u32,
        /// What the registry said.
        detail: String,
    },
    /// The body does not decode with its writer schema (truncated, corrupt).
    #[error("malformed avro for schema id {id}: {detail}")]
    Malformed {
        /// The id from the header.
        id: u32,
        /// What the decoder said.
        detail: String,
    },
    /// The record is of another type than the topic carries.
    #[error("schema id {id} is record {found}, topic carries {expected}")]
    WrongRecord {
        /// The id from the header.
        id: u32,
        /// The record's full name.
        found: String,
        /// The expected full name.
        expected: &'static str,
    },
    /// The registry is unreachable; the payload may be fine.
    #[error("registry unavailable: {0}")]
    Unavailable(String),
}

impl DecodeError {
    /// Whether the failure is the registry's (retry) rather than the payload's (DLQ).
    pub fn is_retryable(&self) -> bool {
        matches!(self, DecodeError::Unavailable(_))
    }

    /// A short stable name for metrics labels and DLQ headers.
    pub fn kind(&self) -> &'static str {
        match self {
            DecodeError::Header(HeaderError::TooShort(_)) => "truncated_header",
            DecodeError::Header(HeaderError::BadMagic(_)) => "bad_magic_byte",
            DecodeError::UnknownSchema { .. } => "unknown_schema_id",
            DecodeError::Malformed { .. } => "malformed_avro",
            DecodeError::WrongRecord { .. } => "wrong_record_type",
            DecodeError::Unavailable(_) => "registry_unavailable",
        }
    }
}

/// A decoded event with the schema id it was written with.
#[derive(Debug, Clone)]
pub struct Decoded<T> {
    /// The writer schema's registry id.
    pub schema_id: u32,
    /// The event.
    pub value: T,
}

/// Encoder and decoder sharing one registry connection and schema caches.
pub struct Codec {
    settings: SrSettings,
    encoder: AvroEncoder,
    decoder: AvroDecoder,
    pub(crate) http: reqwest::Client,
    pub(crate) config: RegistryConfig,
}

impl std::fmt::Debug for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Codec")
            .field("url", &self.config.url)
            .finish_non_exhaustive()
    }
}

/// The HTTP client every registry call goes through: the timeout and the
/// CA file apply alike to the converter's calls and to our own.
fn http_client(cfg: &RegistryConfig) -> Result<reqwest::ClientBuilder, EncodeError> {
    let mut b = reqwest::Client::builder().timeout(cfg.timeout);
    if let Some(path) = &cfg.ca_file {
        let pem = std::fs::read(path).map_err(|e| {
            EncodeError::Config(format!("reading the CA file {}: {e}", path.display()))
        })?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| EncodeError::Config(format!("the CA file {}: {e}", path.display())))?;
        if certs.is_empty() {
            return Err(EncodeError::Config(format!(
                "the CA file {} holds no certificate",
                path.display()
            )));
        }
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    Ok(b)
}

fn settings(cfg: &RegistryConfig) -> Result<SrSettings, EncodeError> {
    let mut b = SrSettings::new_builder(cfg.url.trim_end_matches('/').to_owned());
    b.set_timeout(cfg.timeout);
    if let Some(user) = &cfg.username {
        b.set_basic_authorization(user, cfg.password.as_deref());
    }
    b.build_with(http_client(cfg)?)
        .map_err(|e| EncodeError::Config(e.to_string()))
}

impl Codec {
    /// Builds a codec; no request is made until the first encode or decode.
    pub fn new(cfg: &RegistryConfig) -> Result<Self, EncodeError> {
        let http = http_client(cfg)?
            .build()
            .map_err(|e| EncodeError::Config(e.to_string()))?;
        Ok(Self {
            encoder: AvroEncoder::new(settings(cfg)?),
            decoder: AvroDecoder::new(settings(cfg)?),
            settings: settings(cfg)?,
            http,
            config: cfg.clone(),
        })
    }

    pub(crate) fn settings(&self) -> &SrSettings {
        &self.settings
    }

    /// The strategy that registers (or finds) the compiled-in schema under
    /// `<topic>-value`, so producers always write with the schema they were
    /// built against, never with whatever is latest.
    fn strategy(topic: &str, kind: EventKind) -> SubjectNameStrategy {
        let schema = SuppliedSchema::new(
            Some(kind.record_name().to_owned()),
            SchemaType::Avro,
            kind.schema().to_owned(),
        );
        SubjectNameStrategy::TopicNameStrategyWithSchema(topic.to_owned(), false, schema)
    }

    /// Encodes `value` in the Confluent wire format for `topic`.
    pub async fn encode<T: Serialize>(
        &self,
        topic: &str,
        kind: EventKind,
        value: &T,
    ) -> Result<Vec<u8>, EncodeError> {
        match self
            .encoder
            .encode_struct(value, &Self::strategy(topic, kind))
            .await
        {
            Ok(bytes) => Ok(bytes),
            Err(e) => {
                // NB: the converter caches failed lookups; a registry that
                // was down must be asked again next time.
                self.encoder.remove_errors_from_cache();
                Err(EncodeError::Registry(self.explain(&e).await))
            }
        }
    }

    /// `e` with its cause. For a transport error the converter keeps only
    /// "error sending request for url (...)" and drops why (an unknown CA,
    /// a refused connection); asking once more with our own client, which
    /// has the same TLS settings, recovers it.
    async fn explain(&self, e: &SRCError) -> String {
        if !e.retriable {
            return e.to_string();
        }
        let url = format!("{}/subjects", self.config.url.trim_end_matches('/'));
        let mut req = self.http.get(&url);
        if let Some(user) = &self.config.username {
            req = req.basic_auth(user, self.config.password.as_deref());
        }
        match req.send().await {
            Err(re) => format!("{e}: {}", novyra_core::error_chain(&re)),
            Ok(_) => e.to_string(),
        }
    }

    /// Decodes a payload into a raw Avro value (used by `tail`).
    pub async fn decode_value(
        &self,
        payload: &[u8],
    ) -> Result<(u32, Option<String>, Value), DecodeError> {
        let (id, _) = wire::split(payload)?;
        if let Err(e) = self.decoder.get_schema(id).await {
            return Err(self.classify_fetch(id, e).await);
        }
        let r = self
            .decoder
            .decode(Some(payload))
            .await
            .map_err(|e| DecodeError::Malformed {
                id,
                detail: e.to_string(),
            })?;
        Ok((id, r.name.map(|n| n.fullname(None)), r.value))
    }

    /// Why the writer schema `id` could not be had. Only the registry's
    /// definite "not found" makes the id unknown (and the record poison);
    /// anything else, including an HTTP 5xx (Apicurio answers 500 while its
    /// database reconnects), is the registry's fault and retried. Found by
    /// `make chaos`: a 500 was taken for an unknown id, and the converter
    /// cached that failure, so valid records went to the DLQ for good.
    async fn classify_fetch(&self, id: u32, e: SRCError) -> DecodeError {
        // NB: the converter caches failed lookups; never keep one.
        self.decoder.remove_errors_from_cache();
        if e.retriable {
            return DecodeError::Unavailable(self.explain(&e).await);
        }
        let url = format!("{}/schemas/ids/{id}", self.config.url.trim_end_matches('/'));
        let mut req = self.http.get(&url);
        if let Some(user) = &self.config.username {
            req = req.basic_auth(user, self.config.password.as_deref());
        }
        match req.send().await {
            Ok(r) if r.status() == reqwest::StatusCode::NOT_FOUND => DecodeError::UnknownSchema {
                id,
                detail: e.to_string(),
            },
            Ok(r) => DecodeError::Unavailable(format!(
                "registry answered {} for schema id {id}: {e}",
                r.status()
            )),
            Err(re) => DecodeError::Unavailable(format!("{re}; before that: {e}")),
        }
    }

    /// Decodes a payload of `kind` with the compiled-in schema as reader.
    pub async fn decode<T: DeserializeOwned>(
        &self,
        kind: EventKind,
        payload: &[u8],
    ) -> Result<Decoded<T>, DecodeError> {
        self.decode_as(kind.parsed(), kind.record_name(), payload)
            .await
    }

    /// Decodes a payload written with any registered schema of the record
    /// `record_name`, resolved against `reader` by Avro's schema resolution
    /// rules: fields the reader lacks are skipped, fields the writer lacks
    /// take the reader's default. This is what lets a v1 consumer read v2
    /// events and a v2 consumer read v1 events.
    pub async fn decode_as<T: DeserializeOwned>(
        &self,
        reader: &apache_avro::Schema,
        record_name: &'static str,
        payload: &[u8],
    ) -> Result<Decoded<T>, DecodeError> {
        let (id, name, value) = self.decode_value(payload).await?;
        if let Some(found) = name {
            if found != record_name {
                return Err(DecodeError::WrongRecord {
                    id,
                    found,
                    expected: record_name,
                });
            }
        }
        let malformed = |e: apache_avro::Error| DecodeError::Malformed {
            id,
            detail: e.to_string(),
        };
        let value = value.resolve(reader).map_err(malformed)?;
        let value = apache_avro::from_value::<T>(&value).map_err(malformed)?;
        Ok(Decoded {
            schema_id: id,
            value,
        })
    }
}
