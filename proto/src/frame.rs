//! Frame layout (all integers little-endian):
//!
//! ```text
//! offset size field
//! 0      4    len      bytes that follow this field (10 + payload), ≤ MAX_FRAME_LEN
//! 4      1    version  PROTO_VERSION
//! 5      1    kind     0 = request, 1 = reply
//! 6      8    id       request id chosen by the sender of the request; echoed in the reply
//! 14     len-10 payload postcard-encoded `Envelope` (request) or `Reply` (reply)
//! ```
//!
//! A reader first reads the 14 header bytes, checks them with
//! [`FrameHeader::parse`] (which refuses a length above [`MAX_FRAME_LEN`], so a
//! hostile peer cannot make us allocate more than that), then reads exactly
//! `payload_len()` bytes.

use thiserror::Error;

/// Protocol version carried in every frame.
pub const PROTO_VERSION: u8 = 1;
/// Bytes of the fixed header, length field included.
pub const FRAME_HEADER_LEN: usize = 14;
/// Largest value the length field may hold: 16 MiB of payload plus the header
/// rest. Chunks are at most 4 MiB, so every legal message fits.
pub const MAX_FRAME_LEN: u32 = 16 * 1024 * 1024 + 10;
/// Largest chunk size a cluster may be configured with.
pub const MAX_CHUNK_SIZE: u32 = 4 * 1024 * 1024;

/// What a frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameKind {
    /// A request (`Envelope`).
    Request = 0,
    /// A reply (`Reply`) to the request with the same id.
    Reply = 1,
}

/// Why a frame header or payload was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum FrameError {
    /// The length field is below the header size or above [`MAX_FRAME_LEN`].
    #[error("frame length {0} out of bounds (10..={MAX_FRAME_LEN})")]
    BadLength(u32),
    /// The version byte is not [`PROTO_VERSION`].
    #[error("unsupported protocol version {0} (this build speaks {PROTO_VERSION})")]
    BadVersion(u8),
    /// The kind byte is neither request nor reply.
    #[error("unknown frame kind {0}")]
    BadKind(u8),
    /// The payload did not decode as the expected message.
    #[error("malformed payload: {0}")]
    Decode(String),
    /// The message does not fit in one frame.
    #[error("message of {0} bytes exceeds the frame limit")]
    TooLarge(usize),
}

/// The parsed fixed header of a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// The length field.
    pub len: u32,
    /// Request or reply.
    pub kind: FrameKind,
    /// The request id.
    pub id: u64,
}

impl FrameHeader {
    /// Checks and parses the first [`FRAME_HEADER_LEN`] bytes of a frame.
    pub fn parse(b: &[u8; FRAME_HEADER_LEN]) -> Result<Self, FrameError> {
        let len = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        if !(10..=MAX_FRAME_LEN).contains(&len) {
            return Err(FrameError::BadLength(len));
        }
        if b[4] != PROTO_VERSION {
            return Err(FrameError::BadVersion(b[4]));
        }
        let kind = match b[5] {
            0 => FrameKind::Request,
            1 => FrameKind::Reply,
            k => return Err(FrameError::BadKind(k)),
        };
        let mut id = [0u8; 8];
        id.copy_from_slice(&b[6..14]);
        Ok(FrameHeader {
            len,
            kind,
            id: u64::from_le_bytes(id),
        })
    }

    /// Bytes of payload that follow the header.
    pub fn payload_len(&self) -> usize {
        self.len as usize - 10
    }
}

/// Encodes one whole frame (header and postcard payload) into `out`, which is
/// cleared first.
pub fn encode_frame<T: serde::Serialize>(
    kind: FrameKind,
    id: u64,
    msg: &T,
    out: &mut Vec<u8>,
) -> Result<(), FrameError> {
    out.clear();
    out.extend_from_slice(&[0u8; FRAME_HEADER_LEN]);
    let buf = std::mem::take(out);
    let mut buf = postcard::to_extend(msg, buf).map_err(|e| FrameError::Decode(e.to_string()))?;
    let len = buf.len() - 4;
    if len > MAX_FRAME_LEN as usize {
        return Err(FrameError::TooLarge(len));
    }
    buf[0..4].copy_from_slice(&(len as u32).to_le_bytes());
    buf[4] = PROTO_VERSION;
    buf[5] = kind as u8;
    buf[6..14].copy_from_slice(&id.to_le_bytes());
    *out = buf;
    Ok(())
}

/// Decodes a payload. Every length inside is bounded by the payload's own
/// size, so this never allocates more than the frame holds.
pub fn decode_payload<'a, T: serde::Deserialize<'a>>(payload: &'a [u8]) -> Result<T, FrameError> {
    postcard::from_bytes(payload).map_err(|e| FrameError::Decode(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::{Envelope, Request};

    #[test]
    fn round_trip() {
        let env = Envelope {
            epoch: 7,
            req: Request::GetAttr {
                path: "/a/b".into(),
            },
        };
        let mut out = Vec::new();
        encode_frame(FrameKind::Request, 42, &env, &mut out).unwrap();
        let hdr: [u8; FRAME_HEADER_LEN] = out[..FRAME_HEADER_LEN].try_into().unwrap();
        let h = FrameHeader::parse(&hdr).unwrap();
        assert_eq!(h.id, 42);
        assert_eq!(h.kind, FrameKind::Request);
        assert_eq!(h.payload_len(), out.len() - FRAME_HEADER_LEN);
        let back: Envelope = decode_payload(&out[FRAME_HEADER_LEN..]).unwrap();
        assert_eq!(back, env);
    }

    #[test]
    fn hostile_headers_are_refused() {
        let mut h = [0u8; FRAME_HEADER_LEN];
        h[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        h[4] = PROTO_VERSION;
        assert_eq!(FrameHeader::parse(&h), Err(FrameError::BadLength(u32::MAX)));
        h[0..4].copy_from_slice(&3u32.to_le_bytes());
        assert_eq!(FrameHeader::parse(&h), Err(FrameError::BadLength(3)));
        h[0..4].copy_from_slice(&20u32.to_le_bytes());
        h[4] = 99;
        assert_eq!(FrameHeader::parse(&h), Err(FrameError::BadVersion(99)));
        h[4] = PROTO_VERSION;
        h[5] = 7;
        assert_eq!(FrameHeader::parse(&h), Err(FrameError::BadKind(7)));
    }

    proptest::proptest! {
        #[test]
        fn random_payloads_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = decode_payload::<Envelope>(&bytes);
            let _ = decode_payload::<crate::msg::Reply>(&bytes);
        }
    }
}
