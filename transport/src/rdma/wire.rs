//! The RDMA message header and frame checks. Everything read from a
//! message or a bulk area is checked here before use: a peer that sends
//! garbage is disconnected with the reason, never followed.

use super::BULK;
use sealfs_proto::frame::decode_payload;
use sealfs_proto::{FrameHeader, FrameKind, FRAME_HEADER_LEN};

/// Bytes of the header at the start of every message.
pub(crate) const HDR: usize = 48;
const MAGIC: u32 = u32::from_le_bytes(*b"SRDM");

/// What a message says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// The frame follows the header.
    Inline = 1,
    /// The frame waits in the sender's region at `addr`/`rkey`: READ it.
    Pull = 2,
    /// The frame was written into the receiver's area A.
    Written = 3,
    /// The client has read the staged reply: the server's area B is free.
    Release = 4,
}

/// Where a big reply may be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Target {
    pub addr: u64,
    pub rkey: u32,
    pub cap: u32,
}

/// A message header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Msg {
    pub kind: Kind,
    pub id: u64,
    /// Frame length.
    pub len: u32,
    pub rkey: u32,
    pub addr: u64,
    pub reply: Option<Target>,
}

impl Msg {
    pub fn new(kind: Kind, id: u64, len: usize) -> Msg {
        Msg {
            kind,
            id,
            len: len as u32,
            rkey: 0,
            addr: 0,
            reply: None,
        }
    }

    /// Writes the header into the first [`HDR`] bytes of `b`.
    pub fn encode(&self, b: &mut [u8]) {
        let b = &mut b[..HDR];
        b.fill(0);
        b[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        b[4] = self.kind as u8;
        b[8..16].copy_from_slice(&self.id.to_le_bytes());
        b[16..20].copy_from_slice(&self.len.to_le_bytes());
        b[20..24].copy_from_slice(&self.rkey.to_le_bytes());
        b[24..32].copy_from_slice(&self.addr.to_le_bytes());
        if let Some(t) = self.reply {
            b[32..40].copy_from_slice(&t.addr.to_le_bytes());
            b[40..44].copy_from_slice(&t.rkey.to_le_bytes());
            b[44..48].copy_from_slice(&t.cap.to_le_bytes());
        }
    }

    /// Reads and checks a received message of `got` bytes.
    pub fn decode(b: &[u8], got: usize) -> Result<Msg, String> {
        if got < HDR || b.len() < got {
            return Err(format!("message of {got} bytes is shorter than its header"));
        }
        let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let u64_at = |o: usize| {
            let mut v = [0u8; 8];
            v.copy_from_slice(&b[o..o + 8]);
            u64::from_le_bytes(v)
        };
        if u32_at(0) != MAGIC {
            return Err(format!("bad magic {:#010x}", u32_at(0)));
        }
        let kind = match b[4] {
            1 => Kind::Inline,
            2 => Kind::Pull,
            3 => Kind::Written,
            4 => Kind::Release,
            k => return Err(format!("unknown message kind {k}")),
        };
        let len = u32_at(16);
        let reply = match u32_at(44) {
            0 => None,
            cap => Some(Target {
                addr: u64_at(32),
                rkey: u32_at(40),
                cap,
            }),
        };
        let m = Msg {
            kind,
            id: u64_at(8),
            len,
            rkey: u32_at(20),
            addr: u64_at(24),
            reply,
        };
        let len = len as usize;
        match kind {
            Kind::Inline if HDR + len > got => {
                return Err(format!(
                    "inline frame of {len} bytes in a {got}-byte message"
                ))
            }
            Kind::Inline | Kind::Pull | Kind::Written
                if !(FRAME_HEADER_LEN..=BULK).contains(&len) =>
            {
                return Err(format!("frame length {len} out of bounds"))
            }
            _ => {}
        }
        if let Some(t) = reply {
            if t.cap as usize > BULK {
                return Err(format!("reply target of {} bytes", t.cap));
            }
        }
        Ok(m)
    }
}

/// Checks a whole frame of kind `want` and decodes its payload; returns
/// the frame id and the message.
pub(crate) fn decode_frame<T: serde::de::DeserializeOwned>(
    b: &[u8],
    want: FrameKind,
) -> Result<(u64, T), String> {
    let hdr: &[u8; FRAME_HEADER_LEN] = b
        .get(..FRAME_HEADER_LEN)
        .and_then(|h| h.try_into().ok())
        .ok_or_else(|| format!("frame of {} bytes", b.len()))?;
    let h = FrameHeader::parse(hdr).map_err(|e| e.to_string())?;
    if h.kind != want {
        return Err(format!(
            "a {:?} frame where a {want:?} was expected",
            h.kind
        ));
    }
    if h.payload_len() + FRAME_HEADER_LEN != b.len() {
        return Err(format!(
            "frame says {} payload bytes, message holds {}",
            h.payload_len(),
            b.len() - FRAME_HEADER_LEN
        ));
    }
    let v = decode_payload(&b[FRAME_HEADER_LEN..]).map_err(|e| e.to_string())?;
    Ok((h.id, v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_garbage() {
        let mut m = Msg::new(Kind::Pull, 77, 100_000);
        m.addr = 0x1234_5678;
        m.rkey = 9;
        m.reply = Some(Target {
            addr: 42,
            rkey: 3,
            cap: 1 << 20,
        });
        let mut b = [0u8; HDR];
        m.encode(&mut b);
        assert_eq!(Msg::decode(&b, HDR), Ok(m));
        assert!(Msg::decode(&b, HDR - 1).is_err());
        let mut bad = b;
        bad[0] ^= 1;
        assert!(Msg::decode(&bad, HDR).unwrap_err().contains("magic"));
        let mut bad = b;
        bad[4] = 9;
        assert!(Msg::decode(&bad, HDR).is_err());
        let mut bad = b;
        bad[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(Msg::decode(&bad, HDR)
            .unwrap_err()
            .contains("out of bounds"));
        let inline = Msg::new(Kind::Inline, 1, 100);
        inline.encode(&mut b);
        assert!(Msg::decode(&b, HDR).unwrap_err().contains("inline frame"));
    }
}
