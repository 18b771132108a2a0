//! WebSocket framing (RFC 6455), server side: decoding what a client sends
//! (masked frames, fragmented messages, control frames) with the size
//! limit checked from the header, before any payload is buffered; and
//! encoding what the server sends (unmasked binary messages, pings, pongs
//! and closes).

use bytes::{Buf, Bytes, BytesMut};

/// Opcodes (RFC 6455 §5.2).
const CONTINUATION: u8 = 0x0;
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

/// Largest payload of a control frame.
const MAX_CONTROL: usize = 125;

/// A close code and what it means here (docs/PROTOCOL.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CloseCode(pub u16);

impl CloseCode {
    /// A session the server ended with a `DisconnectNotice`.
    pub const NORMAL: CloseCode = CloseCode(1000);
    /// The server is shutting down.
    pub const GOING_AWAY: CloseCode = CloseCode(1001);
    /// A WebSocket protocol error.
    pub const PROTOCOL_ERROR: CloseCode = CloseCode(1002);
    /// A text message: only binary messages are accepted.
    pub const UNSUPPORTED_DATA: CloseCode = CloseCode(1003);
    /// A binary message that is not a `ClientFrame`.
    pub const INVALID_PAYLOAD: CloseCode = CloseCode(1007);
    /// A message above the size limit.
    pub const TOO_BIG: CloseCode = CloseCode(1009);
    /// The credentials were refused.
    pub const UNAUTHENTICATED: CloseCode = CloseCode(4401);
    /// A connection limit refused the session.
    pub const LIMITED: CloseCode = CloseCode(4429);
}

/// What a client sent, once a whole message or control frame is in.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    /// A whole binary message (its fragments joined).
    Binary(Bytes),
    /// A ping; the pong carries the same payload.
    Ping(Bytes),
    /// A pong (an answer to our ping, or unsolicited: both prove life).
    Pong,
    /// The client closes; its code, if it gave one.
    Close(Option<u16>),
}

/// Why the connection must close: the code to close with and a reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The close code.
    pub code: CloseCode,
    /// Said in the close frame (at most 123 bytes) and in the log.
    pub reason: &'static str,
}

impl Violation {
    fn protocol(reason: &'static str) -> Violation {
        Violation {
            code: CloseCode::PROTOCOL_ERROR,
            reason,
        }
    }
}

/// The decoder's state between reads: the fragments of a message that has
/// not ended yet.
#[derive(Debug, Default)]
pub struct Decoder {
    /// The fragments of the message in progress and whether it is text
    /// (`None` between messages). Empty while no message is split.
    partial: Option<(bool, BytesMut)>,
}

/// A frame's header, as read.
struct Header {
    fin: bool,
    opcode: u8,
    mask: [u8; 4],
    /// Where the payload starts.
    start: usize,
    len: usize,
}

impl Decoder {
    /// Takes the next whole message or control frame out of `buf`;
    /// `Ok(None)` when `buf` holds only part of one. `max` bounds a
    /// message's size (all its fragments together); it is checked from
    /// each frame's header, so a too-large message is refused before its
    /// payload is read.
    pub fn next(&mut self, buf: &mut BytesMut, max: usize) -> Result<Option<Incoming>, Violation> {
        loop {
            let Some(header) = header(buf)? else {
                return Ok(None);
            };
            let control = header.opcode >= CLOSE;
            let so_far = self.partial.as_ref().map_or(0, |(_, b)| b.len());
            if !control && so_far.saturating_add(header.len) > max {
                return Err(Violation {
                    code: CloseCode::TOO_BIG,
                    reason: "message above limits.max_frame_bytes",
                });
            }
            if buf.len() < header.start + header.len {
                // Room for the rest of this frame, at most once per frame.
                buf.reserve(header.start + header.len - buf.len());
                return Ok(None);
            }
            buf.advance(header.start);
            let mut payload = buf.split_to(header.len);
            unmask(&mut payload, header.mask);
            if let Some(incoming) = self.frame(header.fin, header.opcode, payload)? {
                return Ok(Some(incoming));
            }
        }
    }

    /// Applies one whole frame; a message once its last fragment is in.
    fn frame(
        &mut self,
        fin: bool,
        opcode: u8,
        payload: BytesMut,
    ) -> Result<Option<Incoming>, Violation> {
        match opcode {
            PING => Ok(Some(Incoming::Ping(payload.freeze()))),
            PONG => Ok(Some(Incoming::Pong)),
            CLOSE => close(&payload).map(|code| Some(Incoming::Close(code))),
            TEXT | BINARY if self.partial.is_some() => Err(Violation::protocol(
                "a new message began before the last one ended",
            )),
            TEXT if fin => Err(text()),
            BINARY if fin => Ok(Some(Incoming::Binary(payload.freeze()))),
            TEXT | BINARY => {
                self.partial = Some((opcode == TEXT, payload));
                Ok(None)
            }
            CONTINUATION => {
                let Some((is_text, mut message)) = self.partial.take() else {
                    return Err(Violation::protocol("a continuation without a message"));
                };
                message.extend_from_slice(&payload);
                match (fin, is_text) {
                    (false, _) => {
                        self.partial = Some((is_text, message));
                        Ok(None)
                    }
                    (true, true) => Err(text()),
                    (true, false) => Ok(Some(Incoming::Binary(message.freeze()))),
                }
            }
            _ => Err(Violation::protocol("unknown opcode")),
        }
    }
}

fn text() -> Violation {
    Violation {
        code: CloseCode::UNSUPPORTED_DATA,
        reason: "text messages are not accepted; send binary ClientFrames",
    }
}

/// The header at the start of `buf`, once all of it is there.
fn header(buf: &[u8]) -> Result<Option<Header>, Violation> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (buf[0], buf[1]);
    if b0 & 0x70 != 0 {
        return Err(Violation::protocol(
            "reserved bits set (no extension was agreed)",
        ));
    }
    let (fin, opcode) = (b0 & 0x80 != 0, b0 & 0x0F);
    if b1 & 0x80 == 0 {
        return Err(Violation::protocol("client frames must be masked"));
    }
    let (len, at) = match b1 & 0x7F {
        126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as u64, 4),
        127 if buf.len() >= 10 => {
            let mut be = [0u8; 8];
            be.copy_from_slice(&buf[2..10]);
            (u64::from_be_bytes(be), 10)
        }
        126 | 127 => return Ok(None),
        n => (u64::from(n), 2),
    };
    if opcode >= CLOSE && (!fin || len > MAX_CONTROL as u64) {
        return Err(Violation::protocol(
            "control frames must be whole and at most 125 bytes",
        ));
    }
    if buf.len() < at + 4 {
        return Ok(None);
    }
    let mask = [buf[at], buf[at + 1], buf[at + 2], buf[at + 3]];
    Ok(Some(Header {
        fin,
        opcode,
        mask,
        start: at + 4,
        // Above usize (only on 32-bit targets) is above any limit anyway.
        len: usize::try_from(len).unwrap_or(usize::MAX),
    }))
}

/// Unmasks `payload` in place.
fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    for (i, byte) in payload.iter_mut().enumerate() {
        *byte ^= mask[i & 3];
    }
}

/// The code of a close frame's payload (none when empty), checked: only
/// codes an endpoint may send (RFC 6455 §7.4), and a UTF-8 reason.
fn close(payload: &[u8]) -> Result<Option<u16>, Violation> {
    match payload.len() {
        0 => return Ok(None),
        1 => return Err(Violation::protocol("a close frame with a one-byte payload")),
        _ => {}
    }
    let code = u16::from_be_bytes([payload[0], payload[1]]);
    if !matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999) {
        return Err(Violation::protocol("a close code an endpoint may not send"));
    }
    if std::str::from_utf8(&payload[2..]).is_err() {
        return Err(Violation {
            code: CloseCode::INVALID_PAYLOAD,
            reason: "a close reason that is not UTF-8",
        });
    }
    Ok(Some(code))
}

/// Appends the header of an unmasked server frame of `len` bytes.
fn put_header(out: &mut Vec<u8>, opcode: u8, len: usize) {
    let (head, n) = head(opcode, len);
    out.extend_from_slice(&head[..n]);
}

/// A server frame's header (unmasked, final) for a payload of `len` bytes:
/// the bytes and how many of them are used.
fn head(opcode: u8, len: usize) -> ([u8; 10], usize) {
    let mut head = [0u8; 10];
    head[0] = 0x80 | opcode;
    let n = match len {
        0..=125 => {
            head[1] = len as u8;
            2
        }
        126..=0xFFFF => {
            head[1] = 126;
            head[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            4
        }
        _ => {
            head[1] = 127;
            head[2..10].copy_from_slice(&(len as u64).to_be_bytes());
            10
        }
    };
    (head, n)
}

/// The header of a binary message of `len` bytes, for a write that sends
/// it and the payload without copying (see [`put_binary`]).
pub fn binary_head(len: usize) -> ([u8; 10], usize) {
    head(BINARY, len)
}

/// Appends a binary message holding `payload` (one encoded `ServerFrame`).
pub fn put_binary(out: &mut Vec<u8>, payload: &[u8]) {
    put_header(out, BINARY, payload.len());
    out.extend_from_slice(payload);
}

/// Appends a ping carrying `payload` (at most 125 bytes).
pub fn put_ping(out: &mut Vec<u8>, payload: &[u8]) {
    let payload = &payload[..payload.len().min(MAX_CONTROL)];
    put_header(out, PING, payload.len());
    out.extend_from_slice(payload);
}

/// Appends the pong answering a ping that carried `payload`.
pub fn put_pong(out: &mut Vec<u8>, payload: &[u8]) {
    let payload = &payload[..payload.len().min(MAX_CONTROL)];
    put_header(out, PONG, payload.len());
    out.extend_from_slice(payload);
}

/// Appends a close frame with `code` and `reason` (cut to fit 125 bytes,
/// at a character boundary).
pub fn put_close(out: &mut Vec<u8>, code: CloseCode, reason: &str) {
    let mut end = reason.len().min(MAX_CONTROL - 2);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    put_header(out, CLOSE, 2 + end);
    out.extend_from_slice(&code.0.to_be_bytes());
    out.extend_from_slice(&reason.as_bytes()[..end]);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client frame: masked, as browsers send them.
    fn client(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x12, 0x34, 0x56, 0x78];
        let mut out = vec![(if fin { 0x80 } else { 0 }) | opcode];
        match payload.len() {
            n @ 0..=125 => out.push(0x80 | n as u8),
            n @ 126..=0xFFFF => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
        out
    }

    fn decode_all(bytes: &[u8], max: usize) -> Result<Vec<Incoming>, Violation> {
        let mut decoder = Decoder::default();
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(incoming) = decoder.next(&mut buf, max)? {
            out.push(incoming);
        }
        Ok(out)
    }

    #[test]
    fn binary_messages_of_every_length_form() {
        for len in [0, 1, 125, 126, 65_535, 65_536, 70_000] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let got = decode_all(&client(true, BINARY, &payload), 1 << 20).unwrap();
            assert_eq!(got, vec![Incoming::Binary(Bytes::from(payload))], "{len}");
        }
    }

    #[test]
    fn byte_by_byte_arrival_decodes_the_same() {
        let mut bytes = client(false, BINARY, b"hel");
        bytes.extend(client(true, PING, b"p"));
        bytes.extend(client(true, CONTINUATION, b"lo"));
        bytes.extend(client(true, CLOSE, &1000u16.to_be_bytes()));
        let mut decoder = Decoder::default();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for byte in bytes {
            buf.extend_from_slice(&[byte]);
            while let Some(incoming) = decoder.next(&mut buf, 1024).unwrap() {
                got.push(incoming);
            }
        }
        assert_eq!(
            got,
            vec![
                Incoming::Ping(Bytes::from_static(b"p")),
                Incoming::Binary(Bytes::from_static(b"hello")),
                Incoming::Close(Some(1000)),
            ]
        );
    }

    #[test]
    fn violations_close_with_their_codes() {
        let code_of = |bytes: Vec<u8>| decode_all(&bytes, 100).unwrap_err().code;
        let code = code_of;
        assert_eq!(code(client(true, TEXT, b"hi")), CloseCode::UNSUPPORTED_DATA);
        let mut fragmented_text = client(false, TEXT, b"h");
        fragmented_text.extend(client(true, CONTINUATION, b"i"));
        assert_eq!(code(fragmented_text), CloseCode::UNSUPPORTED_DATA);
        assert_eq!(code(client(true, BINARY, &[0; 101])), CloseCode::TOO_BIG);
        let mut two_parts = client(false, BINARY, &[0; 60]);
        two_parts.extend(client(true, CONTINUATION, &[0; 60]));
        assert_eq!(code(two_parts), CloseCode::TOO_BIG);
        let mut unmasked = client(true, BINARY, b"x");
        unmasked[1] &= 0x7F;
        assert_eq!(code(unmasked), CloseCode::PROTOCOL_ERROR);
        assert_eq!(code(client(true, 0x3, b"")), CloseCode::PROTOCOL_ERROR);
        assert_eq!(code(client(false, PING, b"")), CloseCode::PROTOCOL_ERROR);
        assert_eq!(
            code(client(true, CONTINUATION, b"x")),
            CloseCode::PROTOCOL_ERROR
        );
        for code in [0u16, 999, 1004, 1005, 1006, 1015, 2999, 5000] {
            assert_eq!(
                code_of(client(true, CLOSE, &code.to_be_bytes())),
                CloseCode::PROTOCOL_ERROR,
                "{code}"
            );
        }
        let mut bad_reason = 1000u16.to_be_bytes().to_vec();
        bad_reason.extend_from_slice(b"\xff\xfe");
        assert_eq!(
            code_of(client(true, CLOSE, &bad_reason)),
            CloseCode::INVALID_PAYLOAD
        );
        let mut reserved = client(true, BINARY, b"x");
        reserved[0] |= 0x40;
        assert_eq!(code(reserved), CloseCode::PROTOCOL_ERROR);
    }

    #[test]
    fn a_too_big_message_is_refused_from_its_header_alone() {
        // Only the header of a 1 GiB frame has arrived.
        let mut header = vec![0x80 | BINARY, 0x80 | 127];
        header.extend_from_slice(&(1u64 << 30).to_be_bytes());
        header.extend_from_slice(&[0, 0, 0, 0]);
        let err = decode_all(&header, 1 << 20).unwrap_err();
        assert_eq!(err.code, CloseCode::TOO_BIG);
    }

    #[test]
    fn server_frames_round_trip_through_a_masking_client() {
        let mut out = Vec::new();
        put_binary(&mut out, &[7; 300]);
        assert_eq!(&out[..4], &[0x82, 126, 1, 44]);
        assert_eq!(out.len(), 304);
        out.clear();
        put_close(&mut out, CloseCode::TOO_BIG, &"é".repeat(100));
        assert_eq!(out[1] as usize, out.len() - 2);
        assert!(out.len() - 2 <= 125);
        assert_eq!(&out[2..4], &1009u16.to_be_bytes());
        assert!(std::str::from_utf8(&out[4..]).is_ok(), "cut at a boundary");
    }
}
