//! One device's MSI-X vectors on KVM: a GSI and an irqfd per vector.

use std::sync::Arc;

use vmm_sys_util::eventfd::EventFd;

use super::GsiRoutingTable;
use crate::msi::{MsiError, MsiInterruptGroup, MsiMessage};

/// One vector: its GSI and the eventfd KVM listens on for it.
struct Vector {
    gsi: u32,
    irqfd: EventFd,
}

/// A device's vectors, each with its own GSI and irqfd, routed through the shared
/// [`GsiRoutingTable`].
///
/// An unmasked vector has an MSI route to its message; a masked one has no route at all, so
/// even a stray write to its irqfd reaches nobody. Dropping the group unregisters the irqfds
/// and removes the routes.
pub struct KvmMsiGroup {
    routing: Arc<GsiRoutingTable>,
    vectors: Vec<Vector>,
}

impl KvmMsiGroup {
    /// `count` vectors, each with a fresh GSI and a registered irqfd, all masked (no route).
    pub fn new(routing: Arc<GsiRoutingTable>, count: u16) -> Result<Self, MsiError> {
        let mut group = KvmMsiGroup {
            routing,
            vectors: Vec::with_capacity(usize::from(count)),
        };
        // On error `group` is dropped, which undoes the vectors set up so far.
        for vector in 0..count {
            let vector_state = group.add_vector(vector)?;
            group.vectors.push(vector_state);
        }
        Ok(group)
    }

    /// Sets up vector `vector`: GSI and registered irqfd.
    fn add_vector(&self, vector: u16) -> Result<Vector, MsiError> {
        let gsi = self
            .routing
            .allocate_gsi()
            .map_err(|source| MsiError::NoFreeGsi { vector, source })?;
        let irqfd = EventFd::new(libc::EFD_NONBLOCK).map_err(|source| MsiError::EventFd {
            op: "create",
            vector,
            source,
        });
        let registered = irqfd.and_then(|irqfd| {
            self.routing
                .vm()
                .register_irqfd(&irqfd, gsi)
                .map(|()| irqfd)
                .map_err(|source| MsiError::Irqfd {
                    vector,
                    gsi,
                    source,
                })
        });
        match registered {
            Ok(irqfd) => Ok(Vector { gsi, irqfd }),
            Err(e) => {
                if let Err(release) = self.routing.release_gsi(gsi) {
                    log::error!("MSI vector {vector}: {release}");
                }
                Err(e)
            }
        }
    }

    fn vector(&self, vector: u16) -> Result<&Vector, MsiError> {
        self.vectors
            .get(usize::from(vector))
            .ok_or(MsiError::VectorOutOfRange {
                vector,
                count: self.vectors.len(),
            })
    }

    /// The GSI of `vector`.
    pub fn gsi(&self, vector: u16) -> Option<u32> {
        self.vectors.get(usize::from(vector)).map(|v| v.gsi)
    }
}

impl MsiInterruptGroup for KvmMsiGroup {
    fn update(&self, vector: u16, msg: MsiMessage, masked: bool) -> Result<(), MsiError> {
        let gsi = self.vector(vector)?.gsi;
        self.routing.set_msi_route(gsi, (!masked).then_some(msg))
    }

    fn trigger(&self, vector: u16) -> Result<(), MsiError> {
        self.vector(vector)?
            .irqfd
            .write(1)
            .map_err(|source| MsiError::EventFd {
                op: "write",
                vector,
                source,
            })
    }
}

impl Drop for KvmMsiGroup {
    fn drop(&mut self) {
        let vm = self.routing.vm().clone();
        for (i, v) in self.vectors.iter().enumerate() {
            if let Err(e) = vm.unregister_irqfd(&v.irqfd, v.gsi) {
                log::error!(
                    "MSI vector {i}: unregistering the irqfd of GSI {}: {e}",
                    v.gsi
                );
            }
            if let Err(e) = self.routing.release_gsi(v.gsi) {
                log::error!("MSI vector {i}: {e}");
            }
        }
    }
}
