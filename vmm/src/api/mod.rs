//! The REST API: Cloud Hypervisor's endpoints under `/api/v1/` on a unix socket. The `api`
//! thread parses requests and hands each one to the VMM thread, which owns the VM, acts on
//! it and replies; the `api` thread then writes the response.

#[cfg(any(test, feature = "fuzzing"))]
pub mod harness;
pub mod routes;
pub mod server;
pub mod socket;

use std::sync::mpsc::Sender;
use std::sync::Arc;

use vmm_sys_util::eventfd::EventFd;

use crate::config::VmConfig;

/// What a request asks the VMM to do.
#[derive(Debug)]
pub enum ApiAction {
    VmmPing,
    VmmShutdown,
    VmCreate(Box<VmConfig>),
    VmBoot,
    VmDelete,
    VmInfo,
    VmCounters,
    VmPause,
    VmResume,
    VmShutdown,
    VmReboot,
    VmPowerButton,
    VmResize(crate::memory::resize::VmResize),
    VmResizeZone(crate::memory::resize::VmResizeZone),
    VmSnapshot(crate::snapshot::request::VmSnapshotConfig),
    VmRestore(Box<crate::snapshot::request::RestoreConfig>),
    VmSendMigration(Box<crate::migration::request::SendMigrationConfig>),
    /// Answered when the migration ends, not at once.
    VmReceiveMigration(Box<crate::migration::request::ReceiveMigrationConfig>),
}

impl ApiAction {
    /// The endpoint the action came from, for messages.
    pub fn endpoint(&self) -> &'static str {
        match self {
            ApiAction::VmmPing => "vmm.ping",
            ApiAction::VmmShutdown => "vmm.shutdown",
            ApiAction::VmCreate(_) => "vm.create",
            ApiAction::VmBoot => "vm.boot",
            ApiAction::VmDelete => "vm.delete",
            ApiAction::VmInfo => "vm.info",
            ApiAction::VmCounters => "vm.counters",
            ApiAction::VmPause => "vm.pause",
            ApiAction::VmResume => "vm.resume",
            ApiAction::VmShutdown => "vm.shutdown",
            ApiAction::VmReboot => "vm.reboot",
            ApiAction::VmPowerButton => "vm.power-button",
            ApiAction::VmResize(_) => "vm.resize",
            ApiAction::VmResizeZone(_) => "vm.resize-zone",
            ApiAction::VmSnapshot(_) => "vm.snapshot",
            ApiAction::VmRestore(_) => "vm.restore",
            ApiAction::VmSendMigration(_) => "vm.send-migration",
            ApiAction::VmReceiveMigration(_) => "vm.receive-migration",
        }
    }
}

/// An API failure: the HTTP status and a message for the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub status: u16,
    pub message: String,
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError {
            status: 400,
            message: message.into(),
        }
    }

    /// The thing the action is about does not exist (no VM has been created).
    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError {
            status: 404,
            message: message.into(),
        }
    }

    /// The action is not valid in the VM's current state.
    pub fn conflict(message: impl Into<String>) -> Self {
        ApiError {
            status: 409,
            message: message.into(),
        }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        ApiError {
            status: 500,
            message: message.into(),
        }
    }
}

/// `Ok(Some(json))` answers 200 with a body, `Ok(None)` answers 204.
pub type ApiResult = Result<Option<serde_json::Value>, ApiError>;

/// One request on its way to the VMM thread, with the channel for its answer.
pub struct ApiRequest {
    pub action: ApiAction,
    pub reply: Replier,
}

/// Where the VMM thread sends a request's answer; for an answer the `api` thread does not
/// wait for (`vm.receive-migration`), the answer also wakes the HTTP server.
pub struct Replier {
    answer: Sender<ApiResult>,
    wake: Option<Arc<EventFd>>,
}

impl Replier {
    pub fn new(answer: Sender<ApiResult>, wake: Option<Arc<EventFd>>) -> Self {
        Replier { answer, wake }
    }

    /// Sends the answer; the client may have gone, and the action stands either way.
    pub fn send(self, result: ApiResult) {
        let _ = self.answer.send(result);
        if let Some(wake) = &self.wake {
            if let Err(e) = wake.write(1) {
                log::error!("cannot wake the api thread for a late answer: {e}");
            }
        }
    }
}
