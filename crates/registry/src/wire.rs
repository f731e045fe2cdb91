//! The Confluent wire format header: one magic byte (0) and a big-endian
//! 32-bit schema id in front of the Avro binary.
//! See <https://docs.confluent.io/platform/current/schema-registry/fundamentals/serdes-develop/index.html#wire-format>.

/// The only magic byte the format defines.
pub const MAGIC: u8 = 0;

/// Why a payload has no valid header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// Fewer than five bytes.
    #[error("payload of {0} bytes is too short for the confluent header")]
    TooShort(usize),
    /// First byte is not 0.
    #[error("bad magic byte {0:#04x} (expected 0x00)")]
    BadMagic(u8),
}

/// Splits a payload into schema id and Avro body.
pub fn split(payload: &[u8]) -> Result<(u32, &[u8]), HeaderError> {
    if payload.len() < 5 {
        return Err(HeaderError::TooShort(payload.len()));
    }
    if payload[0] != MAGIC {
        return Err(HeaderError::BadMagic(payload[0]));
    }
    let id = u32::from_be_bytes([payload[1], payload[2], payload[3], payload[4]]);
    Ok((id, &payload[5..]))
}

/// Prefixes an Avro body with the header for schema `id`.
pub fn frame(id: u32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + body.len());
    out.push(MAGIC);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_header() {
        assert_eq!(split(&[0, 0, 0, 1, 2, 9]), Ok((258, &[9u8][..])));
        assert_eq!(split(&[1, 0, 0, 0, 1]), Err(HeaderError::BadMagic(1)));
        assert_eq!(split(&[0, 0]), Err(HeaderError::TooShort(2)));
        assert_eq!(split(&frame(258, &[9])), Ok((258, &[9u8][..])));
    }
}
