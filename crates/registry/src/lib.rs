//! Avro and the schema registry: the `.avsc` files compiled in, the
//! Confluent wire format (magic byte 0, big-endian schema id, Avro binary),
//! and a codec that encodes and decodes the pipeline's events through any
//! Confluent-compatible registry.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use novyra_registry::{Codec, EventKind, RegistryConfig};
//! let codec = Codec::new(&RegistryConfig::new("http://127.0.0.1:8081/apis/ccompat/v7"))?;
//! codec.register_all("novyra.").await?;
//! # Ok(()) }
//! ```

mod admin;
mod codec;
mod schemas;
pub mod wire;

pub use admin::RegisterError;
/// The Avro library the codec is built on (its version is pinned by the
/// registry client), for callers that bring their own reader schema.
pub use apache_avro;
pub use codec::{Codec, DecodeError, Decoded, EncodeError, RegistryConfig};
pub use schemas::{EventKind, SCHEMAS};
