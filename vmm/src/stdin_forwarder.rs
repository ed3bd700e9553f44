//! Moves host input from stdin to the guest's UART, holding it back while the guest's
//! receive FIFO is full.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex};

use vmm_sys_util::terminal::Terminal;

use crate::devices::SerialDevice;

/// How long to hold host input back while the guest's receive FIFO is full.
const INPUT_BACKOFF_MS: i32 = 10;

/// Puts a terminal on stdin into raw mode for as long as it lives.
pub struct RawStdin;

impl RawStdin {
    pub fn enable() -> Option<Self> {
        let stdin = std::io::stdin();
        if !std::io::IsTerminal::is_terminal(&stdin) {
            return None;
        }
        match stdin.lock().set_raw_mode() {
            Ok(()) => Some(RawStdin),
            Err(e) => {
                log::warn!("cannot put the terminal in raw mode: {e}");
                None
            }
        }
    }
}

impl Drop for RawStdin {
    fn drop(&mut self) {
        if let Err(e) = std::io::stdin().lock().set_canon_mode() {
            log::warn!("cannot restore the terminal: {e}");
        }
    }
}

/// Reads from descriptor 0 itself. `std::io::stdin()` is buffered: it would pull more than
/// the guest has room for out of the pipe into its own buffer, where epoll cannot see it,
/// and the rest of a long line would wait for the next keystroke.
fn read_stdin(buf: &mut [u8]) -> std::io::Result<usize> {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the duration of the call.
    let n = unsafe { libc::read(libc::STDIN_FILENO, buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Watches stdin in the control loop's epoll set while the guest has room for input.
pub struct StdinForwarder {
    epoll_fd: RawFd,
    token: u64,
    /// False once stdin reached its end or failed; it is never watched again.
    open: bool,
    watched: bool,
}

impl StdinForwarder {
    /// `enabled` is false when the serial port does not go to the terminal.
    pub fn new(epoll_fd: RawFd, token: u64, enabled: bool) -> Self {
        StdinForwarder {
            epoll_fd,
            token,
            open: enabled,
            watched: false,
        }
    }

    fn stdin_fd() -> RawFd {
        std::io::stdin().as_raw_fd()
    }

    fn watch(&mut self) {
        let event = epoll::Event::new(epoll::Events::EPOLLIN, self.token);
        self.watched = epoll::ctl(
            self.epoll_fd,
            epoll::ControlOptions::EPOLL_CTL_ADD,
            Self::stdin_fd(),
            event,
        )
        .is_ok();
    }

    fn unwatch(&mut self) {
        if self.watched {
            let _ = epoll::ctl(
                self.epoll_fd,
                epoll::ControlOptions::EPOLL_CTL_DEL,
                Self::stdin_fd(),
                epoll::Event::new(epoll::Events::empty(), 0),
            );
            self.watched = false;
        }
    }

    /// Before each wait: watch stdin when there is a guest with room for input, and stop
    /// when there is none. Returns the epoll timeout to use (a short one while input is held
    /// back, so the FIFO is checked again).
    pub fn prepare(&mut self, serial: Option<&Arc<Mutex<SerialDevice>>>) -> i32 {
        let Some(serial) = serial.filter(|_| self.open) else {
            self.unwatch();
            return -1;
        };
        if self.watched {
            return -1;
        }
        let room = serial.lock().map(|s| s.input_room() > 0).unwrap_or(false);
        if room {
            self.watch();
            -1
        } else {
            INPUT_BACKOFF_MS
        }
    }

    /// Stdin is readable: move what the guest can take.
    pub fn forward(&mut self, serial: Option<&Arc<Mutex<SerialDevice>>>) {
        let Some(serial) = serial else {
            self.unwatch();
            return;
        };
        let mut serial = serial.lock().unwrap_or_else(|e| e.into_inner());
        let room = serial.input_room();
        if room == 0 {
            // Hold input back until the guest reads.
            log::debug!("stdin: the guest's receive FIFO is full; holding input back");
            self.unwatch();
            return;
        }
        let mut buf = vec![0u8; room];
        match read_stdin(&mut buf) {
            Ok(0) => {
                // End of input: the guest keeps running without it.
                self.unwatch();
                self.open = false;
            }
            Ok(n) => {
                let taken = serial.queue_input(&buf[..n]);
                log::debug!("stdin: {n} bytes read, {taken} queued (room was {room})");
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                log::warn!("stdin: {e}; no more serial input");
                self.unwatch();
                self.open = false;
            }
        }
    }
}
