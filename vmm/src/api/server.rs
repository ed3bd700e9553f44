//! The `api` thread: serves HTTP on the API socket and passes each request to the VMM
//! thread, waiting for its answer. Requests that do not name a valid action are answered
//! here, without bothering the VMM thread.

use std::os::unix::net::UnixListener;
use std::sync::mpsc::{channel, Receiver, Sender, TryRecvError};
use std::sync::Arc;
use std::thread::JoinHandle;

use micro_http::{Deferred, HttpServer, Reply, Request, Response, ServerConfig, StatusCode};
use vmm_sys_util::eventfd::EventFd;

use super::routes::{self, RouteError};
use super::{ApiAction, ApiRequest, ApiResult, Replier};
use crate::seccomp::ThreadFilter;

/// The VMM thread's end of the API: requests arrive on the channel, and `notify` is
/// written once per request so that the VMM's epoll loop wakes up.
pub struct ApiChannel {
    pub requests: Sender<ApiRequest>,
    pub notify: EventFd,
    /// The HTTP server's waker, for answers that come later (set by [`start`]).
    pub wake: Option<Arc<EventFd>>,
}

fn gone() -> super::ApiError {
    super::ApiError {
        status: 503,
        message: "the VMM is shutting down".into(),
    }
}

impl ApiChannel {
    /// Hands `action` to the VMM thread; its answer comes on the returned channel.
    fn send(
        &self,
        action: ApiAction,
        wake: Option<Arc<EventFd>>,
    ) -> Result<Receiver<ApiResult>, super::ApiError> {
        let (reply, answer) = channel();
        self.requests
            .send(ApiRequest {
                action,
                reply: Replier::new(reply, wake),
            })
            .map_err(|_| gone())?;
        self.notify.write(1).map_err(|_| gone())?;
        Ok(answer)
    }

    /// Sends `action` to the VMM thread and waits for its answer.
    fn call(&self, action: ApiAction) -> ApiResult {
        self.send(action, None)?.recv().map_err(|_| gone())?
    }

    /// Sends `action` to the VMM thread; the answer is written when it comes, while the
    /// server goes on with other connections.
    fn call_later(&self, action: ApiAction) -> Reply {
        let Some(wake) = self.wake.clone() else {
            return Reply::Now(respond(self.call(action)));
        };
        match self.send(action, Some(wake)) {
            Ok(answer) => Reply::Later(Deferred::new(move || match answer.try_recv() {
                Ok(result) => Some(respond(result)),
                Err(TryRecvError::Empty) => None,
                Err(TryRecvError::Disconnected) => Some(respond(Err(gone()))),
            })),
            Err(e) => Reply::Now(respond(Err(e))),
        }
    }
}

/// The answer to the VMM thread's result: 200 with its JSON, 204, or the error chain.
pub(crate) fn respond(result: ApiResult) -> Response {
    match result {
        Ok(Some(body)) => Response::json(StatusCode::OK, body.to_string()),
        Ok(None) => Response::new(StatusCode::NO_CONTENT),
        Err(e) => {
            if e.status >= 500 {
                log::error!("API request failed: {}", e.message);
            } else {
                log::info!("API request refused ({}): {}", e.status, e.message);
            }
            Response::error(StatusCode(e.status), &e.message)
        }
    }
}

/// The answer to a `method` request that names no valid action.
pub(crate) fn refuse(method: &str, error: RouteError) -> Response {
    match error {
        RouteError::NotFound(path) => {
            Response::error(StatusCode::NOT_FOUND, &format!("no such endpoint: {path}"))
        }
        RouteError::MethodNotAllowed { path, allowed } => Response::error(
            StatusCode::METHOD_NOT_ALLOWED,
            &format!("{path} takes {allowed}, not {method}"),
        )
        .with_header("Allow", allowed),
        RouteError::BadRequest(e) => respond(Err(e)),
    }
}

fn handle(channel: &ApiChannel, request: Request) -> Reply {
    let method = request.method.to_string();
    log::debug!("API {method} {}", request.path);
    match routes::parse(&method, &request.path, &request.body) {
        // Answered when the migration ends; vmm.ping and vm.info go on meanwhile.
        Ok(action @ ApiAction::VmReceiveMigration(_)) => channel.call_later(action),
        Ok(action) => Reply::Now(respond(channel.call(action))),
        Err(e) => Reply::Now(refuse(&method, e)),
    }
}

/// The API server's limits, as docs/api.md states them: micro_http's defaults.
fn server_config() -> ServerConfig {
    ServerConfig::default()
}

/// Starts the `api` thread; it serves until `stop` is written. It applies `seccomp` before
/// it accepts a connection.
pub fn start(
    listener: UnixListener,
    mut channel: ApiChannel,
    stop: EventFd,
    seccomp: ThreadFilter,
) -> std::io::Result<JoinHandle<()>> {
    let mut server = HttpServer::new(listener, server_config())
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    channel.wake = Some(Arc::new(server.waker()?));
    std::thread::Builder::new()
        .name("api".into())
        .spawn(move || {
            if let Err(e) = seccomp.apply_to_current() {
                log::error!("the API is not served: {e}");
                return;
            }
            let mut handler = |request: Request| handle(&channel, request);
            if let Err(e) = server.run_replying(&stop, &mut handler) {
                log::error!("API server stopped: {e}");
            }
        })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// docs/api.md "Limits and behaviour of the HTTP server": a change here must change the
    /// docs (and the OpenAPI file's 413/431 descriptions) too.
    #[test]
    fn limits_are_the_documented_ones() {
        let c = server_config();
        assert_eq!(c.max_body_bytes, 256 * 1024);
        assert_eq!(c.max_header_bytes, 16 * 1024);
        assert_eq!(c.request_timeout, Duration::from_secs(5));
        assert_eq!(c.idle_timeout, Duration::from_secs(120));
        assert_eq!(c.max_connections, 256);
    }
}
