//! Telling a client that its request has just made it the service's first client. The daemon
//! trusts an administrator's first client without a word in the reply (Multipass's rule, and its
//! replies have no field for it), so the reply carries a header, [`FIRST_CLIENT_HEADER`], which
//! stock clients ignore and our CLI turns into a note on standard error: the administrator learns
//! that others now need a passphrase or a token.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::HeaderValue;
use rpc::server::Peer;
use rpc::FIRST_CLIENT_HEADER;

use crate::gate::Gate;

/// Tower layer of the daemon's server: adds [`FIRST_CLIENT_HEADER`] to the reply that
/// [`Gate::first_client_news`] says made its client the first.
#[derive(Clone)]
pub struct FirstClientLayer(pub Arc<Gate>);

impl<S> tower::Layer<S> for FirstClientLayer {
    type Service = FirstClient<S>;

    fn layer(&self, inner: S) -> FirstClient<S> {
        FirstClient {
            inner,
            gate: self.0.clone(),
        }
    }
}

/// See [`FirstClientLayer`].
#[derive(Clone)]
pub struct FirstClient<S> {
    inner: S,
    gate: Arc<Gate>,
}

impl<S, B, R> tower::Service<http::Request<B>> for FirstClient<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let client = request
            .extensions()
            .get::<Peer>()
            .and_then(|peer| peer.client.as_ref().map(|c| c.fingerprint()));
        let reply = self.inner.call(request);
        let gate = self.gate.clone();
        Box::pin(async move {
            let mut reply = reply.await?;
            // The gate decided while the handler ran, before its reply was made.
            if client.is_some_and(|client| gate.first_client_news(&client)) {
                reply
                    .headers_mut()
                    .insert(FIRST_CLIENT_HEADER, HeaderValue::from_static("trusted"));
            }
            Ok(reply)
        })
    }
}
