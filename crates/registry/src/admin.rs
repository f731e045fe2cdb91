//! Registering the schemas and setting each subject's compatibility.

use schema_registry_converter::async_impl::schema_registry::post_schema;
use schema_registry_converter::schema_registry_common::{SchemaType, SuppliedSchema};

use crate::{Codec, EventKind};

/// Why registration failed.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// The registry refused or could not be reached while registering.
    #[error("registering {subject}: {detail}")]
    Register {
        /// The subject.
        subject: String,
        /// What the registry said.
        detail: String,
    },
    /// Setting the compatibility level failed.
    #[error("setting compatibility of {subject}: {detail}")]
    Compatibility {
        /// The subject.
        subject: String,
        /// What the registry said.
        detail: String,
    },
}

/// The compatibility level DESIGN.md asks for.
pub const COMPATIBILITY: &str = "BACKWARD";

impl Codec {
    /// Sets BACKWARD compatibility on `subject`, then registers `schema` there;
    /// returns the schema id. Idempotent: an existing identical schema keeps its id.
    pub async fn register(
        &self,
        subject: &str,
        record_name: &str,
        schema: &str,
    ) -> Result<u32, RegisterError> {
        let url = format!(
            "{}/config/{}",
            self.config.url.trim_end_matches('/'),
            subject
        );
        let mut req = self
            .http
            .put(&url)
            .json(&serde_json::json!({ "compatibility": COMPATIBILITY }));
        if let Some(user) = &self.config.username {
            req = req.basic_auth(user, self.config.password.as_deref());
        }
        let resp = req.send().await.map_err(|e| RegisterError::Compatibility {
            subject: subject.to_owned(),
            detail: e.to_string(),
        })?;
        if !resp.status().is_success() {
            let status = resp.status();
            let body = resp.text().await.unwrap_or_default();
            return Err(RegisterError::Compatibility {
                subject: subject.to_owned(),
                detail: format!("{status}: {body}"),
            });
        }
        let supplied = SuppliedSchema::new(
            Some(record_name.to_owned()),
            SchemaType::Avro,
            schema.to_owned(),
        );
        let registered = post_schema(self.settings(), subject.to_owned(), supplied)
            .await
            .map_err(|e| RegisterError::Register {
                subject: subject.to_owned(),
                detail: e.to_string(),
            })?;
        tracing::info!(subject, id = registered.id, "schema registered");
        Ok(registered.id)
    }

    /// Registers every compiled-in schema under `<prefix><topic>-value`.
    pub async fn register_all(&self, prefix: &str) -> Result<Vec<(String, u32)>, RegisterError> {
        let mut out = Vec::new();
        for kind in EventKind::ALL {
            let subject = format!("{}-value", kind.topic(prefix));
            let id = self
                .register(&subject, kind.record_name(), kind.schema())
                .await?;
            out.push((subject, id));
        }
        Ok(out)
    }
}
