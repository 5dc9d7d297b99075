use tower_layer::Layer;

use super::RateLimit;
use crate::Limiter;

/// Applies the client rate limiter to an inner HTTP service (see the [module docs](super)).
#[derive(Debug)]
pub struct RateLimitLayer<P> {
    limiter: Limiter<P>,
}

impl<P> Clone for RateLimitLayer<P> {
    fn clone(&self) -> Self {
        RateLimitLayer {
            limiter: self.limiter.clone(),
        }
    }
}

impl<P> RateLimitLayer<P> {
    /// A layer sharing `limiter`'s state with every service it wraps.
    pub fn new(limiter: Limiter<P>) -> Self {
        RateLimitLayer { limiter }
    }
}

impl<S, P> Layer<S> for RateLimitLayer<P> {
    type Service = RateLimit<S, P>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit::new(inner, self.limiter.clone())
    }
}
