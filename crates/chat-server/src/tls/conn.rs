//! A served connection: plain TCP or TLS over TCP, holding its place in the
//! TCP connection counts, with the first bytes already read to decide who
//! serves it put back in front of the stream.

use crate::limiter::TcpPermit;
use bytes::{Buf, Bytes};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// A served connection.
pub struct Conn {
    /// The stream.
    io: Io,
    /// Bytes read from `io` to see what the client speaks, to be read
    /// again first; empty once consumed.
    rewind: Bytes,
    /// Gives the connection's place in the TCP limits back on drop.
    _permit: TcpPermit,
}

/// The stream under a [`Conn`].
enum Io {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<TlsStream<TcpStream>>),
}

impl Conn {
    /// A plain TCP connection.
    pub(super) fn plain(stream: TcpStream, permit: TcpPermit) -> Conn {
        Conn {
            io: Io::Plain(stream),
            rewind: Bytes::new(),
            _permit: permit,
        }
    }

    /// A TLS connection, its handshake done.
    pub(super) fn tls(stream: TlsStream<TcpStream>, permit: TcpPermit) -> Conn {
        Conn {
            io: Io::Tls(Box::new(stream)),
            rewind: Bytes::new(),
            _permit: permit,
        }
    }

    /// Puts `first` back in front of what is still to be read.
    pub(super) fn rewound(mut self, first: Bytes) -> Conn {
        self.rewind = first;
        self
    }

    /// Takes the bytes put back, to read them without going through
    /// `AsyncRead`.
    pub fn take_rewind(&mut self) -> Bytes {
        std::mem::take(&mut self.rewind)
    }

    /// The peer's address.
    pub fn peer(&self) -> Option<std::net::SocketAddr> {
        self.connect_info().remote_addr()
    }
}

impl Connected for Conn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        match &self.io {
            Io::Plain(s) => s.connect_info(),
            Io::Tls(s) => s.get_ref().0.connect_info(),
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.rewind.is_empty() {
            let n = this.rewind.len().min(buf.remaining());
            buf.put_slice(&this.rewind[..n]);
            this.rewind.advance(n);
            return Poll::Ready(Ok(()));
        }
        match &mut this.io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
