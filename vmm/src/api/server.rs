//! The `api` thread: serves HTTP on the API socket and passes each request to the VMM
//! thread, waiting for its answer. Requests that do not name a valid action are answered
//! here, without bothering the VMM thread.

use std::os::unix::net::UnixListener;
use std::sync::mpsc::{channel, Sender};
use std::thread::JoinHandle;

use micro_http::{HttpServer, Request, Response, ServerConfig, StatusCode};
use vmm_sys_util::eventfd::EventFd;

use super::routes::{self, RouteError};
use super::{ApiAction, ApiRequest, ApiResult};
use crate::seccomp::ThreadFilter;

/// The VMM thread's end of the API: requests arrive on the channel, and `notify` is
/// written once per request so that the VMM's epoll loop wakes up.
pub struct ApiChannel {
    pub requests: Sender<ApiRequest>,
    pub notify: EventFd,
}

impl ApiChannel {
    /// Sends `action` to the VMM thread and waits for its answer.
    fn call(&self, action: ApiAction) -> ApiResult {
        let (reply, answer) = channel();
        let gone = || super::ApiError {
            status: 503,
            message: "the VMM is shutting down".into(),
        };
        self.requests
            .send(ApiRequest { action, reply })
            .map_err(|_| gone())?;
        self.notify.write(1).map_err(|_| gone())?;
        answer.recv().map_err(|_| gone())?
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

fn handle(channel: &ApiChannel, request: Request) -> Response {
    let method = request.method.to_string();
    log::debug!("API {method} {}", request.path);
    match routes::parse(&method, &request.path, &request.body) {
        Ok(action) => respond(channel.call(action)),
        Err(e) => refuse(&method, e),
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
    channel: ApiChannel,
    stop: EventFd,
    seccomp: ThreadFilter,
) -> std::io::Result<JoinHandle<()>> {
    let mut server = HttpServer::new(listener, server_config())
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    std::thread::Builder::new()
        .name("api".into())
        .spawn(move || {
            if let Err(e) = seccomp.apply_to_current() {
                log::error!("the API is not served: {e}");
                return;
            }
            let mut handler = |request: Request| handle(&channel, request);
            if let Err(e) = server.run(&stop, &mut handler) {
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
