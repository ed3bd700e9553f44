//! What can go wrong setting up a virtio-pci device. These are VMM-side errors: nothing the
//! guest does produces one.

/// A virtio-pci device that cannot be built or wired.
#[derive(Debug, thiserror::Error)]
pub enum VirtioPciError {
    /// The device has no queues, or more than the notification area has room for.
    #[error("a virtio-pci device has 1 to {max} queues, not {0}", max = super::layout::MAX_QUEUES)]
    QueueCount(usize),
    /// The device configuration space is larger than its 4 KiB area of BAR 0.
    #[error("a virtio device configuration space of {0} bytes does not fit in 4 KiB")]
    ConfigSize(u64),
    /// A queue's maximum size is not a power of two of at most 32768.
    #[error("queue {queue}: maximum size {size} is not a power of two of at most 32768")]
    QueueMaxSize {
        /// The queue.
        queue: usize,
        /// Its maximum size.
        size: u16,
    },
    /// A capability did not fit in configuration space.
    #[error("cannot add a capability: {0}")]
    Capability(#[from] pci::ConfigError),
    /// The MSI-X capability or table could not be built.
    #[error("cannot set up MSI-X: {0}")]
    Msix(#[from] pci::MsixError),
    /// A queue notification eventfd could not be created.
    #[error("cannot create the notification eventfd of queue {queue}: {source}")]
    EventFd {
        /// The queue.
        queue: u16,
        /// The system error.
        #[source]
        source: std::io::Error,
    },
    /// BAR 0 has not been placed yet (the device is not on the bus).
    #[error("BAR 0 is not placed yet: add the device to the PCI bus first")]
    BarNotPlaced,
    /// The hypervisor refused an ioeventfd.
    #[error("cannot register the notification ioeventfd of queue {queue} at {addr:#x}: {source}")]
    IoEvent {
        /// The queue.
        queue: u16,
        /// The guest-physical address.
        addr: u64,
        /// What the hypervisor said.
        #[source]
        source: hypervisor::HypervisorError,
    },
}
