//! The TCP side of [`Gateway::serve`](crate::Gateway::serve): how many sockets it holds (in all and per address),
//! how long a socket may stay open with nothing written to it, and how much the kernel buffers for each.
//!
//! The connection caps of [`limits`](crate::limits) count WebSocket connections once upgraded; this counts every
//! socket, upgraded or not, so that a client that opens sockets and sends half a request (or nothing) cannot hold
//! them without bound: each is closed once the gateway has written nothing to it for the quiet timeout (an HTTP
//! request that never ends; a kept-alive socket nobody uses). An upgraded connection is written to at least every
//! idle timeout (a ping when its client is silent), so it is never closed this way.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// Sockets beyond the WebSocket connection cap: requests on their way to an upgrade or a refusal, the page's files.
pub(crate) const SOCKETS_BEYOND_CONNECTIONS: usize = 1024;

/// What the kernel buffers for sending on each socket: small, so that what a slow client has not read yet waits in
/// the gateway (where the write deadline and the idle timeout see it) rather than in the kernel.
const SEND_BUFFER: usize = 64 * 1024;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A [`TcpListener`] that holds at most `sockets` sockets (waiting to accept more), at most `per_address` from one
/// address (closing more at once), each closed after `quiet` without a write.
pub(crate) struct GatewayListener {
    inner: TcpListener,
    sockets: Arc<Semaphore>,
    per_address: Arc<Mutex<HashMap<IpAddr, usize>>>,
    max_per_address: usize,
    quiet: Duration,
}

impl GatewayListener {
    pub(crate) fn new(inner: TcpListener, sockets: usize, per_address: usize, quiet: Duration) -> GatewayListener {
        let sockets = Arc::new(Semaphore::new(sockets.min(Semaphore::MAX_PERMITS)));
        GatewayListener { inner, sockets, per_address: Arc::default(), max_per_address: per_address, quiet }
    }
}

impl axum::serve::Listener for GatewayListener {
    type Io = Socket;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Socket, SocketAddr) {
        loop {
            // Never closed, so acquiring cannot fail; at the cap, new sockets wait in the kernel's backlog.
            let Ok(permit) = Arc::clone(&self.sockets).acquire_owned().await else { continue };
            let (stream, peer) = match self.inner.accept().await {
                Ok(accepted) => accepted,
                Err(err) => {
                    // As axum's own listener does: errors of one connection are retried at once; others (too many
                    // open files) after a pause, so that the loop does not spin.
                    if !matches!(
                        err.kind(),
                        io::ErrorKind::ConnectionRefused
                            | io::ErrorKind::ConnectionAborted
                            | io::ErrorKind::ConnectionReset
                    ) {
                        tracing::error!(%err, "cannot accept a connection");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    continue;
                }
            };
            let address = peer.ip();
            {
                let mut per_address = lock(&self.per_address);
                let held = per_address.entry(address).or_insert(0);
                if *held >= self.max_per_address {
                    tracing::debug!(%address, "closed a socket: its address holds as many as allowed");
                    continue;
                }
                *held += 1;
            }
            if let Err(err) = socket2::SockRef::from(&stream).set_send_buffer_size(SEND_BUFFER) {
                tracing::debug!(%err, "cannot size the socket's send buffer");
            }
            // Every write is a whole batch of frames (the send task flushes once per batch): sent at once, instead of
            // waiting for the ACK of the previous one, which a client with nothing to say delays up to 40 ms.
            if let Err(err) = stream.set_nodelay(true) {
                tracing::debug!(%err, "cannot turn Nagle's algorithm off");
            }
            let held = Held { _permit: permit, per_address: Arc::clone(&self.per_address), address };
            let timer = Box::pin(tokio::time::sleep(self.quiet));
            return (Socket { stream, last_write: Instant::now(), quiet: self.quiet, timer, _held: held }, peer);
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// A socket's places under the caps, freed when it closes.
struct Held {
    _permit: OwnedSemaphorePermit,
    per_address: Arc<Mutex<HashMap<IpAddr, usize>>>,
    address: IpAddr,
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut per_address = lock(&self.per_address);
        if let Some(held) = per_address.get_mut(&self.address) {
            *held -= 1;
            if *held == 0 {
                per_address.remove(&self.address);
            }
        }
    }
}

/// An accepted socket: reads fail with `TimedOut` once nothing has been written to it for `quiet`.
pub(crate) struct Socket {
    stream: TcpStream,
    last_write: Instant,
    quiet: Duration,
    // Fires at least `quiet` after `last_write`; moved forward when it fires early (cheaper than moving it at every
    // write).
    timer: Pin<Box<Sleep>>,
    _held: Held,
}

impl Socket {
    /// Whether the socket has been quiet for too long; re-arms the timer (registering `cx`) when not.
    fn quiet_too_long(&mut self, cx: &mut Context<'_>) -> bool {
        while self.timer.as_mut().poll(cx).is_ready() {
            let due = self.last_write + self.quiet;
            if Instant::now() >= due {
                return true;
            }
            self.timer.as_mut().reset(due);
        }
        false
    }

    fn wrote(&mut self, result: &Poll<io::Result<usize>>) {
        if let Poll::Ready(Ok(written)) = result
            && *written > 0
        {
            self.last_write = Instant::now();
        }
    }
}

impl AsyncRead for Socket {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Pending if this.quiet_too_long(cx) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the gateway wrote nothing to this socket within the quiet timeout",
            ))),
            other => other,
        }
    }
}

impl AsyncWrite for Socket {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let result = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.wrote(&result);
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let result = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.wrote(&result);
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
