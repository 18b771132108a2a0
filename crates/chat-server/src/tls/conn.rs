//! A served connection: plain TCP or TLS over TCP, holding its place in the
//! TCP connection counts. While a [`Divert`] may still want it, its first
//! read looks at the client's first bytes: if they are what the divert
//! asks for, the stream moves to the divert and the HTTP server reading it
//! sees the end of the stream; otherwise the bytes are read again by the
//! HTTP server. The look happens inside the HTTP server's own read, so a
//! connection that sends nothing costs no task and no slot of ours; until
//! its first bytes have reached the HTTP server it holds one timer, and it
//! is closed when that runs out.

use super::Divert;
use crate::limiter::TcpPermit;
use bytes::{Buf, Bytes, BytesMut};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
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
    /// Gives the connection's place in the TCP limits back on drop (moves
    /// with the stream to a divert).
    permit: Option<TcpPermit>,
    /// Set until the first bytes have said who serves the connection.
    deciding: Option<Deciding>,
    /// Set until the HTTP server has read the first [`FIRST_BYTES`]: a
    /// connection that sends less by then is closed, so a silent socket
    /// cannot hold its place in the connection limits forever.
    first: Option<First>,
}

/// Bytes a client sends first within the deadline: an HTTP/2 preface's
/// length (an HTTP/1.1 request line is longer).
const FIRST_BYTES: usize = 24;

/// The deadline for a connection's first bytes.
struct First {
    /// When the connection is closed if they have not come.
    deadline: Pin<Box<tokio::time::Sleep>>,
    /// How many have come.
    read: usize,
}

/// A connection's first bytes, while they are being looked at.
struct Deciding {
    /// Who takes connections starting with its prefix.
    divert: Arc<dyn Divert>,
    /// What has arrived so far.
    first: BytesMut,
}

/// The stream under a [`Conn`].
enum Io {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<TlsStream<TcpStream>>),
    /// Moved to a divert: reads end, writes fail.
    Gone,
}

impl Conn {
    /// A plain TCP connection.
    pub(super) fn plain(stream: TcpStream, permit: TcpPermit) -> Conn {
        Conn::new(Io::Plain(stream), permit)
    }

    /// A TLS connection, its handshake done.
    pub(super) fn tls(stream: TlsStream<TcpStream>, permit: TcpPermit) -> Conn {
        Conn::new(Io::Tls(Box::new(stream)), permit)
    }

    fn new(io: Io, permit: TcpPermit) -> Conn {
        Conn {
            io,
            rewind: Bytes::new(),
            permit: Some(permit),
            deciding: None,
            first: None,
        }
    }

    /// Closes the connection unless its first bytes come within `timeout`.
    pub(super) fn first_bytes_within(mut self, timeout: std::time::Duration) -> Conn {
        self.first = Some(First {
            deadline: Box::pin(tokio::time::sleep(timeout)),
            read: 0,
        });
        self
    }

    /// The first read looks at the first bytes for `divert`.
    pub(super) fn offered_to(mut self, divert: Option<Arc<dyn Divert>>) -> Conn {
        self.deciding = divert.map(|divert| Deciding {
            divert,
            first: BytesMut::new(),
        });
        self
    }

    /// Reads until the first bytes decide; hands the stream to the divert
    /// when they are its prefix followed by a space or `?`. Ready(true)
    /// once the stream is gone.
    fn poll_decide(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        let Some(deciding) = &mut self.deciding else {
            return Poll::Ready(Ok(false));
        };
        let prefix = deciding.divert.prefix();
        loop {
            let first = &deciding.first;
            let n = first.len().min(prefix.len());
            let taken = if first[..n] != prefix[..n] {
                Some(false)
            } else if first.len() > prefix.len() {
                Some(matches!(first[prefix.len()], b' ' | b'?'))
            } else {
                None
            };
            if let Some(taken) = taken {
                let Deciding { divert, first } = self.deciding.take().expect("deciding");
                if !taken {
                    self.rewind = first.freeze();
                    return Poll::Ready(Ok(false));
                }
                // The divert bounds its own handshake.
                divert.take(Conn {
                    io: std::mem::replace(&mut self.io, Io::Gone),
                    rewind: first.freeze(),
                    permit: self.permit.take(),
                    deciding: None,
                    first: None,
                });
                return Poll::Ready(Ok(true));
            }
            deciding.first.reserve(512);
            let read = match &mut self.io {
                Io::Plain(s) => tokio_util::io::poll_read_buf(Pin::new(s), cx, &mut deciding.first),
                Io::Tls(s) => tokio_util::io::poll_read_buf(Pin::new(s), cx, &mut deciding.first),
                Io::Gone => Poll::Ready(Ok(0)),
            };
            match read {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(0)) => {
                    // Ended before deciding: whatever came goes to HTTP.
                    let Deciding { first, .. } = self.deciding.take().expect("deciding");
                    self.rewind = first.freeze();
                    return Poll::Ready(Ok(false));
                }
                Poll::Ready(Ok(_)) => {}
            }
        }
    }

    /// Takes the bytes put back, to read them without going through
    /// `AsyncRead`.
    pub fn take_rewind(&mut self) -> Bytes {
        std::mem::take(&mut self.rewind)
    }

    /// The plain TCP stream and the connection's place in the TCP limits
    /// (to be held as long as the stream), for a transport that drives the
    /// socket itself; the connection back when it is TLS, moved, or has
    /// bytes to be read again.
    pub fn into_tcp(mut self) -> Result<(TcpStream, Option<TcpPermit>), Box<Conn>> {
        if !self.rewind.is_empty() || self.deciding.is_some() {
            return Err(Box::new(self));
        }
        match std::mem::replace(&mut self.io, Io::Gone) {
            Io::Plain(stream) => Ok((stream, self.permit.take())),
            io => {
                self.io = io;
                Err(Box::new(self))
            }
        }
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
            Io::Gone => TcpConnectInfo {
                local_addr: None,
                remote_addr: None,
            },
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
        if let Some(first) = &mut this.first
            && first.deadline.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no request within the handshake timeout",
            )));
        }
        let before = buf.filled().len();
        let read = this.read_decided(cx, buf);
        if let Some(first) = &mut this.first
            && matches!(read, Poll::Ready(Ok(())))
        {
            first.read += buf.filled().len() - before;
            if first.read >= FIRST_BYTES {
                this.first = None;
            }
        }
        read
    }
}

impl Conn {
    /// Reads for the HTTP server once the first bytes decided.
    fn read_decided(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.poll_decide(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            // Diverted: the HTTP server sees the end of the stream.
            Poll::Ready(Ok(true)) => return Poll::Ready(Ok(())),
            Poll::Ready(Ok(false)) => {}
        }
        if !self.rewind.is_empty() {
            let n = self.rewind.len().min(buf.remaining());
            buf.put_slice(&self.rewind[..n]);
            self.rewind.advance(n);
            return Poll::Ready(Ok(()));
        }
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s).poll_read(cx, buf),
            Io::Gone => Poll::Ready(Ok(())),
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
            Io::Gone => Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
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
            Io::Gone => Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
            Io::Gone => false,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s).poll_flush(cx),
            Io::Gone => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s).poll_shutdown(cx),
            Io::Gone => Poll::Ready(Ok(())),
        }
    }
}
