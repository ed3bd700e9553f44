//! What a handler gives back: a response now, or one that comes later ([`Deferred`]), for a
//! request whose answer waits for something that takes long (a live migration), while the
//! server goes on serving other connections.

use crate::Response;

/// A handler's answer to one request.
pub enum Reply {
    /// The response, at once.
    Now(Response),
    /// The response comes later: the server asks `Deferred` for it each time its waker
    /// ([`crate::HttpServer::waker`]) is written, and answers when it has one. The
    /// connection takes no further request meanwhile, and no timeout applies to it.
    Later(Deferred),
}

impl From<Response> for Reply {
    fn from(response: Response) -> Self {
        Reply::Now(response)
    }
}

/// A response on its way: `poll` returns it once it is there.
pub struct Deferred(Box<dyn FnMut() -> Option<Response> + Send>);

impl Deferred {
    /// `poll` is called on the server's thread after each wake; `None` means not yet.
    pub fn new(poll: impl FnMut() -> Option<Response> + Send + 'static) -> Self {
        Deferred(Box::new(poll))
    }

    pub(crate) fn poll(&mut self) -> Option<Response> {
        (self.0)()
    }
}
