//! The server-side codec of the Session stream: decodes `ClientFrame`s with
//! prost and writes pre-encoded `ServerFrame` bytes as they are.

use crate::EncodedFrame;
use crate::v1::ClientFrame;
use bytes::BufMut;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, EncodeBuf, Encoder};
use tonic_prost::{ProstCodec, ProstDecoder};

/// Initial capacity of a stream's encode and decode buffers. tonic's default
/// is 8 KiB each way, held for the life of the stream; a chat connection is
/// mostly idle and its frames are small, so that was most of an idle
/// connection's memory. The buffers grow when a burst needs more.
const STREAM_BUFFER_BYTES: usize = 512;

/// How much a burst of queued frames may coalesce into one HTTP/2 DATA
/// frame (tonic's default).
const YIELD_THRESHOLD_BYTES: usize = 32 * 1024;

fn buffer_settings() -> BufferSettings {
    BufferSettings::new(STREAM_BUFFER_BYTES, YIELD_THRESHOLD_BYTES)
}

/// Codec for `ChatService.Session` on the server.
#[derive(Debug, Clone, Default)]
pub struct SessionCodec;

impl Codec for SessionCodec {
    type Encode = EncodedFrame;
    type Decode = ClientFrame;
    type Encoder = FrameEncoder;
    type Decoder = ProstDecoder<ClientFrame>;

    fn encoder(&mut self) -> Self::Encoder {
        FrameEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<ClientFrame, ClientFrame>::raw_decoder(buffer_settings())
    }
}

/// Copies an [`EncodedFrame`] into the outgoing buffer.
#[derive(Debug, Clone, Default)]
pub struct FrameEncoder;

impl Encoder for FrameEncoder {
    type Item = EncodedFrame;
    type Error = Status;

    fn encode(&mut self, item: EncodedFrame, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buf.put_slice(&item.0);
        Ok(())
    }

    fn buffer_settings(&self) -> BufferSettings {
        buffer_settings()
    }
}
