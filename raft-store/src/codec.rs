//! The binary encoding of everything slotd keeps on disk or sends between
//! agents: one format-version byte, then postcard.
//!
//! The version byte lets a future release read what an older one wrote (and
//! refuse, with a clear error, what a newer one wrote) instead of
//! misreading it.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// The format written today.
pub const FORMAT_VERSION: u8 = 1;

/// Why bytes could not be turned into a value or back.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("empty payload")]
    Empty,
    #[error("payload has format version {found}; this slotd reads version {FORMAT_VERSION}")]
    Version { found: u8 },
    #[error("malformed payload: {0}")]
    Postcard(#[from] postcard::Error),
    #[error("malformed payload: {0} bytes after the value")]
    Trailing(usize),
}

/// Encodes `value` with the version byte in front.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    let mut out = vec![FORMAT_VERSION];
    let body = postcard::to_stdvec(value)?;
    out.extend_from_slice(&body);
    Ok(out)
}

/// Decodes what `encode` wrote.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    match bytes.split_first() {
        None => Err(CodecError::Empty),
        Some((&FORMAT_VERSION, body)) => Ok(postcard::from_bytes(body)?),
        Some((&found, _)) => Err(CodecError::Version { found }),
    }
}

/// Decodes what `encode` wrote, every byte of it (`decode` ignores bytes
/// left over: a longer value would read as a shorter one).
pub fn decode_exact<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    match bytes.split_first() {
        None => Err(CodecError::Empty),
        Some((&FORMAT_VERSION, body)) => match postcard::take_from_bytes(body)? {
            (value, []) => Ok(value),
            (_, rest) => Err(CodecError::Trailing(rest.len())),
        },
        Some((&found, _)) => Err(CodecError::Version { found }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let v = (7u64, String::from("st01"), vec![1u8, 2, 3]);
        let bytes = encode(&v).unwrap();
        assert_eq!(bytes[0], FORMAT_VERSION);
        assert_eq!(decode::<(u64, String, Vec<u8>)>(&bytes).unwrap(), v);

        assert!(matches!(decode::<u64>(&[]), Err(CodecError::Empty)));
        let mut newer = bytes.clone();
        newer[0] = FORMAT_VERSION + 1;
        let err = decode::<(u64, String, Vec<u8>)>(&newer).unwrap_err();
        assert!(err.to_string().contains("format version 2"), "{err}");
        assert!(decode::<(u64, String, Vec<u8>)>(&bytes[..3]).is_err());
    }
}
