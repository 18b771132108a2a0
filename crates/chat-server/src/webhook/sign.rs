//! The webhook's signature: HMAC-SHA256, keyed by `webhooks.secret`, over
//! `"{timestamp}.{body}"`, sent as `Chat-Webhook-Signature: v1=<hex>`
//! beside `Chat-Webhook-Timestamp: <unix seconds>`. Signing the timestamp
//! with the body lets a receiver refuse forgeries (no secret, no valid
//! signature) and replays (an old timestamp); docs/WEBHOOKS.md shows the
//! check in Python and Node.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header carrying the signature.
pub const SIGNATURE_HEADER: &str = "chat-webhook-signature";
/// The header carrying the signed timestamp (Unix seconds).
pub const TIMESTAMP_HEADER: &str = "chat-webhook-timestamp";

/// The signature header's value for `body` sent at `timestamp`.
pub fn signature(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut out = String::with_capacity(3 + digest.len() * 2);
    out.push_str("v1=");
    for byte in digest {
        out.push(char::from_digit(u32::from(byte >> 4), 16).expect("a nibble"));
        out.push(char::from_digit(u32::from(byte & 15), 16).expect("a nibble"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value a receiver computes with any HMAC-SHA256 library
    /// (Python's `hmac.new(b"key", b"1700000000.{}", sha256).hexdigest()`).
    #[test]
    fn signs_the_timestamp_and_the_body() {
        assert_eq!(
            signature(b"key", 1_700_000_000, b"{}"),
            "v1=9d713ed406bb7076d4123f0dc2c39d2df5c654ed4b0cd56b52c8b4c940bd63ae"
        );
        // Another timestamp, another signature: an old one cannot be
        // replayed with a new time.
        assert_eq!(
            signature(b"key", 1_700_000_001, b"{}"),
            "v1=a76572789c7fdbeab1ef1b6c0bc46e46f0235ef6353c120b31d480e846e8b314"
        );
    }
}
