//! An HTTP/1.1 client over a unix socket for Accordion's REST API, used by
//! `accordion-remote` and the integration tests.
//!
//! [`ApiClient::request`] sends one request and reads one whole response;
//! [`ApiClient::command`] is the Cloud Hypervisor style call on `/api/v1/{command}`.
//! One client keeps its connection open between requests, and reconnects (when it was
//! made with [`ApiClient::connect`]) after the server closed it.
//!
//! ```no_run
//! use api_client::ApiClient;
//! use std::path::Path;
//!
//! let mut client = ApiClient::connect(Path::new("/tmp/api.sock"))?;
//! if let Some(info) = client.command("GET", "vm.info", None)? {
//!     println!("{info}");
//! }
//! client.command("PUT", "vm.resize", Some(r#"{"desired_ram": 1073741824}"#))?;
//! # Ok::<(), api_client::Error>(())
//! ```

#![warn(missing_docs)]

mod client;
mod error;
mod response;
mod wire;

pub use client::ApiClient;
pub use error::Error;
pub use response::Response;
