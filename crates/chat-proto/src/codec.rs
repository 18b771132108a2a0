//! The server-side codec of the Session stream: decodes `ClientFrame`s with
//! prost and writes pre-encoded `ServerFrame` bytes as they are.

use crate::EncodedFrame;
use crate::v1::ClientFrame;
use bytes::BufMut;
use tonic::Status;
use tonic::codec::{Codec, EncodeBuf, Encoder};
use tonic_prost::{ProstCodec, ProstDecoder};

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
        ProstCodec::<ClientFrame, ClientFrame>::raw_decoder(Default::default())
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
}
