//! Where a migration goes: `unix:/path` or `tcp:host:port` (Cloud Hypervisor's URLs), the
//! stream between the two VMMs, and the receiver's listener.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::Duration;

/// How long the sender tries to reach the destination.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A parsed `destination_url` or `receiver_url`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MigrationUrl {
    Unix(PathBuf),
    /// `host:port`.
    Tcp(String),
}

impl MigrationUrl {
    /// Parses `url`; the error names `field`.
    pub fn parse(url: &str, field: &str) -> Result<Self, String> {
        if let Some(path) = url.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(format!(
                    "{field}: unix: needs a socket path, as in unix:/run/vm.sock"
                ));
            }
            return Ok(MigrationUrl::Unix(PathBuf::from(path)));
        }
        if let Some(address) = url.strip_prefix("tcp:") {
            // An IP address: the migration thread looks up no names (its filter has no
            // files to read for it).
            if address.parse::<std::net::SocketAddr>().is_err() {
                return Err(format!(
                    "{field}: tcp: needs an IP address and a port, as in tcp:192.0.2.7:6000 \
                     or tcp:[::1]:6000 (got {address:?})"
                ));
            }
            return Ok(MigrationUrl::Tcp(address.to_string()));
        }
        Err(format!(
            "{field}: {url:?} is neither unix:/path nor tcp:host:port"
        ))
    }

    pub fn is_unix(&self) -> bool {
        matches!(self, MigrationUrl::Unix(_))
    }
}

/// The connection between the two VMMs.
pub enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Stream {
    /// Connects to the destination.
    pub fn connect(url: &MigrationUrl) -> io::Result<Self> {
        match url {
            MigrationUrl::Unix(path) => UnixStream::connect(path).map(Stream::Unix),
            MigrationUrl::Tcp(address) => {
                let mut last = io::Error::other(format!("{address} resolves to no address"));
                for addr in address.to_socket_addrs()? {
                    match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
                        Ok(s) => {
                            s.set_nodelay(true)?;
                            return Ok(Stream::Tcp(s));
                        }
                        Err(e) => last = e,
                    }
                }
                Err(last)
            }
        }
    }

    /// Gives up a read or write that waits longer than `timeout` (none: wait for ever).
    pub fn set_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s
                .set_read_timeout(timeout)
                .and_then(|()| s.set_write_timeout(timeout)),
            Stream::Tcp(s) => s
                .set_read_timeout(timeout)
                .and_then(|()| s.set_write_timeout(timeout)),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(buf),
            Stream::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.write(buf),
            Stream::Tcp(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A stream that may carry file descriptors along (a unix socket; a local migration's
/// memory files).
pub trait FdStream: Read + Write {
    /// Reads exactly `buf.len()` bytes, and the descriptor sent with them, if any.
    fn read_with_fd(&mut self, buf: &mut [u8]) -> io::Result<Option<std::fs::File>>;
    /// Writes `buf` with `fd` attached.
    fn write_with_fd(&mut self, buf: &[u8], fd: std::os::fd::RawFd) -> io::Result<()>;
}

impl FdStream for Stream {
    fn read_with_fd(&mut self, buf: &mut [u8]) -> io::Result<Option<std::fs::File>> {
        use vmm_sys_util::sock_ctrl_msg::ScmSocket;
        let Stream::Unix(s) = self else {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "file descriptors travel over unix sockets only",
            ));
        };
        let mut got = 0;
        let mut file = None;
        while got < buf.len() {
            let (n, fd) = s
                .recv_with_fd(&mut buf[got..])
                .map_err(|e| io::Error::from_raw_os_error(e.errno()))?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            got += n;
            file = file.or(fd);
        }
        Ok(file)
    }

    fn write_with_fd(&mut self, buf: &[u8], fd: std::os::fd::RawFd) -> io::Result<()> {
        use vmm_sys_util::sock_ctrl_msg::ScmSocket;
        let Stream::Unix(s) = self else {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "file descriptors travel over unix sockets only",
            ));
        };
        let n = s
            .send_with_fd(buf, fd)
            .map_err(|e| io::Error::from_raw_os_error(e.errno()))?;
        if n != buf.len() {
            // The descriptor went with the first bytes; the rest follow plainly.
            s.write_all(&buf[n..])?;
        }
        Ok(())
    }
}

impl<S: FdStream> FdStream for Counting<S> {
    fn read_with_fd(&mut self, buf: &mut [u8]) -> io::Result<Option<std::fs::File>> {
        self.inner.read_with_fd(buf)
    }

    fn write_with_fd(&mut self, buf: &[u8], fd: std::os::fd::RawFd) -> io::Result<()> {
        self.inner.write_with_fd(buf, fd)?;
        self.bytes += buf.len() as u64;
        Ok(())
    }
}

/// The receiver's socket, bound on the VMM thread (so a bad address fails the API call) and
/// accepted on by the migration thread. A unix socket's file is removed when it is dropped.
pub enum Listener {
    Unix(UnixListener, PathBuf),
    Tcp(TcpListener),
}

impl Listener {
    pub fn bind(url: &MigrationUrl) -> io::Result<Self> {
        match url {
            MigrationUrl::Unix(path) => {
                UnixListener::bind(path).map(|l| Listener::Unix(l, path.clone()))
            }
            MigrationUrl::Tcp(address) => TcpListener::bind(address.as_str()).map(Listener::Tcp),
        }
    }

    /// Waits for the sender.
    pub fn accept(&self) -> io::Result<Stream> {
        match self {
            Listener::Unix(l, _) => l.accept().map(|(s, _)| Stream::Unix(s)),
            Listener::Tcp(l) => {
                let (s, _) = l.accept()?;
                s.set_nodelay(true)?;
                Ok(Stream::Tcp(s))
            }
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix(_, path) = self {
            if let Err(e) = std::fs::remove_file(path.as_path()) {
                log::warn!("removing the migration socket {}: {e}", path.display());
            }
        }
    }
}

/// Counts what goes through a writer.
pub struct Counting<W> {
    pub inner: W,
    pub bytes: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_unix_paths_or_tcp_host_ports() {
        assert_eq!(
            MigrationUrl::parse("unix:/run/m.sock", "receiver_url"),
            Ok(MigrationUrl::Unix("/run/m.sock".into()))
        );
        assert_eq!(
            MigrationUrl::parse("tcp:0.0.0.0:6000", "receiver_url"),
            Ok(MigrationUrl::Tcp("0.0.0.0:6000".into()))
        );
        for bad in [
            "unix:",
            "tcp:host",
            "tcp:host:port",
            "file:///x",
            "/run/m.sock",
        ] {
            let e = MigrationUrl::parse(bad, "destination_url").unwrap_err();
            assert!(e.starts_with("destination_url: "), "{e}");
        }
    }
}
