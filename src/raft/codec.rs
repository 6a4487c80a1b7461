//! How Raft's records are written, in the store (log entries, vote, snapshots) and between
//! nodes (every Raft message): MessagePack with field names, behind the marker byte `BINARY`.
//! Self-describing like JSON, so `#[serde(default)]` and skipped fields keep working, and an
//! entry is about as large as its content (JSON writes every byte of a key's value as up to
//! four characters). A record without the marker is JSON, as the store held before: stores
//! written by an older version read as they are.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// The first byte of a binary record: a byte MessagePack never uses and JSON never starts with.
pub const BINARY: u8 = 0xc1;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("encoding: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
    #[error("decoding: {0}")]
    Binary(#[from] rmp_serde::decode::Error),
    #[error("decoding a JSON record: {0}")]
    Json(#[from] serde_json::Error),
}

/// `value` as a binary record.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    let mut out = vec![BINARY];
    rmp_serde::encode::write_named(&mut out, value)?;
    Ok(out)
}

/// A record, binary or JSON.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    match bytes.split_first() {
        Some((&BINARY, rest)) => Ok(rmp_serde::from_slice(rest)?),
        _ => Ok(serde_json::from_slice(bytes)?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Command, KeyMode, Object, ObjectPath};

    #[test]
    fn a_key_value_is_written_as_bytes_and_json_records_still_read() {
        let cmd = Command::PutKey {
            path: ObjectPath::parse("system/cfg/drbd").unwrap(),
            key: "r0".into(),
            value: vec![0xff; 100_000],
            mode: KeyMode::Add,
        };
        let binary = encode(&cmd).unwrap();
        assert_eq!(binary[0], BINARY);
        let json = serde_json::to_vec(&cmd).unwrap();
        assert!(
            binary.len() < 100_100,
            "{} bytes for a 100,000-byte value",
            binary.len()
        );
        // JSON still writes bytes as an array of numbers, as the records older versions wrote.
        assert!(String::from_utf8_lossy(&json).contains(r#""value":[255,255,"#));
        assert_eq!(decode::<Command>(&binary).unwrap(), cmd);
        assert_eq!(
            decode::<Command>(&json).unwrap(),
            cmd,
            "a record an older version wrote"
        );
        assert!(decode::<Command>(&[BINARY, 0xc1]).is_err());

        // A config map's keys, in a snapshot, likewise.
        let mut object: Object = serde_json::from_str(r#"{"config":{"sections":[]},"keys":{"r0":[1,2,255]}}"#).unwrap();
        assert_eq!(object.keys["r0"], vec![1, 2, 255]);
        object.keys.insert("big".into(), vec![0xff; 10_000]);
        let binary = encode(&object).unwrap();
        assert!(binary.len() < 10_100, "{} bytes", binary.len());
        assert_eq!(decode::<Object>(&binary).unwrap(), object);
        assert!(serde_json::to_string(&object).unwrap().contains(r#""r0":[1,2,255]"#));
    }
}
