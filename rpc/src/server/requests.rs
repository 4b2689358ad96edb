//! The limit on each peer's requests in flight, and what a request holds until its answer is
//! sent.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

#[cfg(doc)]
use super::IdleClock;
use super::{warn, warnings, InFlight, Peer, PeerSlot, PerPeer, Warnings};

/// What a peer is told when it has too many requests in flight.
pub const TOO_MANY_REQUESTS: &str =
    "Too many requests from this user (or address) are in flight; try again once some have \
     finished.";

/// Tower layer of the daemon's tonic server. At most `max_per_peer` requests are in flight per
/// peer (a local user but root by uid, a TCP peer by address); beyond that a request is refused
/// with `RESOURCE_EXHAUSTED` before any of its message is read, so the memory one peer can make
/// the daemon hold for half-sent messages is bounded whatever its number of connections. Every
/// request also moves its connection's [`IdleClock`]. A request's handler runs to its end
/// whatever its client does meanwhile, and keeps its place until then.
#[derive(Debug, Clone)]
pub struct RequestLimitLayer {
    max_per_peer: usize,
    /// How long a request's message may take to arrive whole.
    arrival: Duration,
    in_flight: PerPeer,
    warnings: Arc<Warnings>,
}

impl RequestLimitLayer {
    /// At most `max_per_peer` requests in flight per peer, each of which must have sent its
    /// whole message within `arrival` of its start.
    pub fn new(max_per_peer: usize, arrival: Duration) -> RequestLimitLayer {
        RequestLimitLayer {
            max_per_peer,
            arrival,
            in_flight: PerPeer::default(),
            warnings: Arc::new(warnings()),
        }
    }
}

impl<S> tower::Layer<S> for RequestLimitLayer {
    type Service = RequestLimit<S>;

    fn layer(&self, inner: S) -> RequestLimit<S> {
        RequestLimit {
            inner,
            limits: self.clone(),
        }
    }
}

/// The service of [`RequestLimitLayer`].
#[derive(Debug, Clone)]
pub struct RequestLimit<S> {
    inner: S,
    limits: RequestLimitLayer,
}

type Reply = http::Response<tonic::body::Body>;

impl<S, B> tower::Service<http::Request<B>> for RequestLimit<S>
where
    S: tower::Service<http::Request<tonic::body::Body>, Response = Reply>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Reply;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Reply, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let peer = request.extensions().get::<Peer>();
        let slot = match peer.and_then(Peer::limited_key) {
            Some(key) => match self.limits.in_flight.claim(key, self.limits.max_per_peer) {
                Some(slot) => Some(slot),
                None => {
                    warn(
                        &self.limits.warnings,
                        Some(key),
                        "a peer has too many requests in flight; refusing its new ones",
                    );
                    let refusal = tonic::Status::resource_exhausted(TOO_MANY_REQUESTS);
                    return Box::pin(std::future::ready(Ok(refusal.into_http())));
                }
            },
            None => None,
        };
        let in_flight = peer.map(|p| p.clock.begin());
        // The handler is not cut short (below), so the wait for a message that never comes is:
        // it fails once `arrival` has passed, and the handler with it.
        let arrival = self.limits.arrival;
        let request = request.map(|body| tonic::body::Body::new(Arriving::new(body, arrival)));
        let reply = self.inner.call(request);
        // A client cannot cut the handler short: if a deadline it sent (`grpc-timeout`), a reset
        // stream or a closed connection drops this future, the handler goes on to its end as a
        // task of its own, holding its request's place. Cut short, a handler could have left a
        // change on disk without its audit line, or let go of a passphrase check's place while
        // the hash went on running, unrecorded, on a blocking thread.
        let work = RunToEnd(Some(Box::pin(async move {
            let reply = reply.await;
            (reply, (slot, in_flight))
        })));
        Box::pin(async move {
            let (reply, held) = work.await;
            // Held until the answer has been sent (or abandoned), not only until the handler
            // returned: a streamed answer is still part of the request.
            Ok(reply?.map(|body| tonic::body::Body::new(Holding { body, _held: held })))
        })
    }
}

/// A future that, dropped before its end, is run to its end as a task of its own. Spawning only
/// then keeps the common case, a request answered while its client waits, free of a task and
/// of the wake-ups between two tasks (which doubled the daemon's CPU time per `ping`).
struct RunToEnd<F: Future + Send + 'static>(Option<Pin<Box<F>>>);

impl<F: Future + Send + 'static> Future for RunToEnd<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let Some(work) = self.0.as_mut() else {
            return Poll::Pending;
        };
        let done = std::task::ready!(work.as_mut().poll(cx));
        self.0 = None;
        Poll::Ready(done)
    }
}

impl<F: Future + Send + 'static> Drop for RunToEnd<F> {
    fn drop(&mut self) {
        if let Some(work) = self.0.take() {
            // Without a runtime (it is shutting down) the work is dropped with it.
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    work.await;
                });
            }
        }
    }
}

/// A request's body that fails unless it has arrived whole within its deadline.
struct Arriving<B> {
    body: Pin<Box<B>>,
    deadline: Instant,
    /// Made only once the body has had to be waited for: a message that comes in one piece
    /// costs no timer.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    ended: bool,
}

impl<B> Arriving<B> {
    fn new(body: B, within: Duration) -> Arriving<B> {
        Arriving {
            body: Box::pin(body),
            deadline: Instant::now() + within,
            timer: None,
            ended: false,
        }
    }
}

impl<B> http_body::Body for Arriving<B>
where
    B: http_body::Body<Data = bytes::Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = bytes::Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        match self.body.as_mut().poll_frame(cx) {
            Poll::Ready(None) => {
                self.ended = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(frame)) => Poll::Ready(Some(frame.map_err(Into::into))),
            Poll::Pending => {
                let deadline = self.deadline;
                let timer = self
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline.into())));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        self.ended = true;
                        let late = tonic::Status::deadline_exceeded(
                            "The request's message did not arrive in time.",
                        );
                        Poll::Ready(Some(Err(late.into())))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// An answer's body, holding its request's place until it is dropped.
struct Holding {
    body: tonic::body::Body,
    _held: (Option<PeerSlot>, Option<InFlight>),
}

impl http_body::Body for Holding {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, tonic::Status>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body that sends nothing and never ends, as a client that opened a stream and went
    /// quiet.
    struct Silent;

    impl http_body::Body for Silent {
        type Data = bytes::Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
            Poll::Pending
        }
    }

    /// A handler runs to its end whatever its client does, so a request whose message never
    /// comes must fail by itself: its body does, once the time for it to arrive has passed.
    #[tokio::test]
    async fn a_message_that_never_arrives_fails_the_handler_in_time() {
        use http_body::Body as _;
        let handler = tower::service_fn(|request: http::Request<tonic::body::Body>| async move {
            let mut body = request.into_body();
            let read = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
            let failed = matches!(read, Some(Err(_)));
            let status = if failed {
                tonic::Status::deadline_exceeded("late")
            } else {
                tonic::Status::ok("read")
            };
            Ok::<_, std::convert::Infallible>(status.into_http())
        });
        let mut service = tower::Layer::layer(
            &RequestLimitLayer::new(4, Duration::from_millis(100)),
            handler,
        );
        let started = Instant::now();
        let request = http::Request::new(Silent);
        let reply = tokio::time::timeout(
            Duration::from_secs(5),
            tower::Service::call(&mut service, request),
        )
        .await
        .expect("the handler ended")
        .unwrap();
        assert!(started.elapsed() >= Duration::from_millis(100));
        let status = tonic::Status::from_header_map(reply.headers()).unwrap();
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
        // A message that arrives is read as it is.
        let request = http::Request::new(Full(Some(bytes::Bytes::from_static(b"x"))));
        let reply = tower::Service::call(&mut service, request).await.unwrap();
        let status = tonic::Status::from_header_map(reply.headers()).unwrap();
        assert_eq!(status.code(), tonic::Code::Ok);
    }

    /// A body of one piece of data.
    struct Full(Option<bytes::Bytes>);

    impl http_body::Body for Full {
        type Data = bytes::Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
            Poll::Ready(self.0.take().map(|d| Ok(http_body::Frame::data(d))))
        }
    }
}
