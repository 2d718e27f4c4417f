//! The admin API's listener: an accept loop of its own instead of `axum::serve`, so that a
//! client cannot hold connections open for ever. The admin port may be reachable from the pod
//! network, and the token is only checked once a request's head has arrived: without these
//! bounds, idle or half-sent requests could take every file descriptor the process has, and
//! ingest with them.
//! - at most 256 connections at once (more wait in the kernel's accept queue);
//! - a request's head must arrive within 30 s, which also closes a kept-alive connection idle
//!   that long;
//! - a request's body must arrive whole within 30 s of its head (`DeadlineBody`): a body cut
//!   short is an error for the handler, answered `400 bad_request`;
//! - a client that stops reading its answer for 30 s loses its connection (`StallLimit`).
//!
//! ([`Limits::DEFAULT`]; the tests use shorter ones.)

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;

/// How many connections, how long for a request's head and body, and how long an answer may
/// wait for the client to read it.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub head_timeout: Duration,
    pub body_timeout: Duration,
    pub write_stall: Duration,
}

impl Limits {
    pub const DEFAULT: Limits = Limits {
        max_connections: 256,
        head_timeout: Duration::from_secs(30),
        body_timeout: Duration::from_secs(30),
        write_stall: Duration::from_secs(30),
    };
}

/// How long a stop waits for requests in progress (idle connections close at once).
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Serves `app` on `listener` until `stop` completes, then lets requests in progress finish
/// (for up to `STOP_GRACE`).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    stop: impl Future<Output = ()>,
    limits: Limits,
) {
    let Limits {
        max_connections,
        head_timeout,
        body_timeout,
        write_stall,
    } = limits;
    let graceful = GracefulShutdown::new();
    let permits = Arc::new(Semaphore::new(max_connections));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(head_timeout);
    let mut stop = std::pin::pin!(stop);
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = &mut stop => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors, say: wait a little rather than spin.
                    tracing::warn!(error = %e, "admin listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut stop => break,
        };
        let _ = stream.set_nodelay(true);
        let app = app
            .clone()
            .map_request(move |req: Request<hyper::body::Incoming>| {
                req.map(|body| {
                    Body::new(DeadlineBody {
                        inner: body,
                        deadline: Box::pin(tokio::time::sleep(body_timeout)),
                        timeout: body_timeout,
                    })
                })
            });
        let stream = StallLimit {
            inner: stream,
            stall: write_stall,
            timer: None,
        };
        let conn = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app));
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
            drop(permit);
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(STOP_GRACE) => {}
    }
}

/// A connection whose writes may wait for the client at most `stall` at a time: a client that
/// asks for an answer and never reads it would otherwise hold its connection (and its place
/// among `max_connections`) for ever.
struct StallLimit<S> {
    inner: S,
    stall: Duration,
    /// Running while a write waits for the client.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> StallLimit<S> {
    fn limit<T>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if r.is_ready() {
            self.timer = None;
            return r;
        }
        let stall = self.stall;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client stopped reading its answer",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for StallLimit<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for StallLimit<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.limit(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.limit(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.limit(cx, r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.limit(cx, r)
    }
}

/// A request body that must arrive whole before its deadline, which starts when the request's
/// head has been read.
struct DeadlineBody<B> {
    inner: B,
    deadline: Pin<Box<tokio::time::Sleep>>,
    timeout: Duration,
}

impl<B> HttpBody for DeadlineBody<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(format!(
                "the request body did not arrive within {} s",
                self.timeout.as_secs_f64()
            )
            .into()))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::post;
    use std::net::SocketAddr;
    use std::time::Instant;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    const SHORT: Limits = Limits {
        max_connections: 2,
        head_timeout: Duration::from_millis(300),
        body_timeout: Duration::from_millis(300),
        write_stall: Duration::from_millis(300),
    };

    async fn started() -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new()
            .route(
                "/echo",
                post(|body: String| async move { format!("got {}", body.len()) }),
            )
            // An answer larger than the socket buffers hold.
            .route(
                "/big",
                axum::routing::get(|| async { "x".repeat(64 << 20) }),
            );
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve(
            listener,
            app,
            async {
                let _ = stop_rx.await;
            },
            SHORT,
        ));
        (addr, stop_tx)
    }

    /// A whole request for `/echo`, asking for the connection to close after the answer.
    const ECHO_ONE: &[u8] =
        b"POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 1\r\n\r\na";

    /// Everything the server sends until it closes the connection, within `within`.
    async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> String {
        let mut got = Vec::new();
        tokio::time::timeout(within, stream.read_to_end(&mut got))
            .await
            .expect("the server did not close the connection")
            .unwrap();
        String::from_utf8_lossy(&got).into_owned()
    }

    /// Sends `raw` on a new connection and reads the answer until the server closes it.
    async fn exchange(addr: SocketAddr, raw: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(raw).await.unwrap();
        read_until_closed(&mut s, Duration::from_secs(10)).await
    }

    #[tokio::test]
    async fn a_connection_that_sends_nothing_or_half_a_head_is_closed() {
        let (addr, _stop) = started().await;
        let start = Instant::now();
        let mut silent = TcpStream::connect(addr).await.unwrap();
        let mut half = TcpStream::connect(addr).await.unwrap();
        half.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        read_until_closed(&mut silent, Duration::from_secs(10)).await;
        read_until_closed(&mut half, Duration::from_secs(10)).await;
        assert!(start.elapsed() >= SHORT.head_timeout);
    }

    #[tokio::test]
    async fn a_body_cut_short_is_refused_when_its_deadline_passes() {
        let (addr, _stop) = started().await;
        let answer = exchange(
            addr,
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc",
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        // A whole body within the deadline is served as usual.
        let answer = exchange(
            addr,
            b"POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 3\r\n\r\nabc",
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("got 3"), "{answer}");
    }

    /// Past the cap, a connection waits to be accepted until one of the others closes.
    #[tokio::test]
    async fn connections_past_the_cap_wait_their_turn() {
        let (addr, _stop) = started().await;
        let idle: Vec<TcpStream> = vec![
            TcpStream::connect(addr).await.unwrap(),
            TcpStream::connect(addr).await.unwrap(),
        ];
        // Accepted in order: the two idle ones hold both places.
        let start = Instant::now();
        let answer = exchange(addr, ECHO_ONE).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        // Served only once the idle two were closed by their head timeout.
        assert!(
            start.elapsed() >= SHORT.head_timeout - Duration::from_millis(100),
            "{:?}",
            start.elapsed()
        );
        drop(idle);
    }

    /// A client that asks for a large answer and never reads it loses its connection, and its
    /// place goes to the next client.
    #[tokio::test]
    async fn a_client_that_stops_reading_loses_its_connection() {
        let (addr, _stop) = started().await;
        let mut stalled = Vec::new();
        for _ in 0..SHORT.max_connections {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .unwrap();
            stalled.push(s);
        }
        let answer = exchange(addr, ECHO_ONE).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        drop(stalled);
    }

    #[tokio::test]
    async fn a_stop_closes_idle_connections_and_ends_the_server() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(
            listener,
            Router::new(),
            async {
                let _ = stop_rx.await;
            },
            Limits::DEFAULT,
        ));
        // A kept-alive connection, idle after one answer.
        let mut idle = TcpStream::connect(addr).await.unwrap();
        idle.write_all(b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            assert_eq!(idle.read(&mut byte).await.unwrap(), 1, "closed too early");
            head.push(byte[0]);
        }
        assert!(head.starts_with(b"HTTP/1.1 404"));
        stop_tx.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("the server did not stop")
            .unwrap();
        read_until_closed(&mut idle, Duration::from_secs(10)).await;
    }
}
