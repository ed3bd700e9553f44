//! The API socket: `--api-socket path=PATH` binds a new unix socket (mode 0600) and removes
//! it on exit; `fd=N` takes a listening socket the caller already bound.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use crate::config::{ConfigError, OptionParser};

/// Where the API listens, from `--api-socket`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiSocketConfig {
    Path(PathBuf),
    Fd(RawFd),
}

impl ApiSocketConfig {
    /// `path=PATH`, `fd=N`, or a bare path, as Cloud Hypervisor accepts.
    pub fn parse(value: &str) -> Result<Self, ConfigError> {
        const OPTION: &str = "--api-socket";
        if !value.contains('=') {
            if value.is_empty() {
                return Err(ConfigError::new(OPTION, "give path=PATH or fd=N"));
            }
            return Ok(ApiSocketConfig::Path(PathBuf::from(value)));
        }
        let p = OptionParser::parse(OPTION, value, &["path", "fd"])?;
        match (p.get("path"), p.get_u32("fd")?) {
            (Some(path), None) if !path.is_empty() => Ok(ApiSocketConfig::Path(path.into())),
            (None, Some(fd)) => {
                let fd = RawFd::try_from(fd)
                    .map_err(|_| ConfigError::new(OPTION, format!("fd={fd} is out of range")))?;
                if fd <= 2 {
                    return Err(ConfigError::new(
                        OPTION,
                        format!("fd={fd} is a standard stream, not a socket"),
                    ));
                }
                Ok(ApiSocketConfig::Fd(fd))
            }
            _ => Err(ConfigError::new(
                OPTION,
                "give exactly one of path=PATH or fd=N",
            )),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiSocketError {
    #[error("--api-socket: {0} is in use by a running process")]
    InUse(PathBuf),
    #[error("--api-socket: {0} exists and is not a socket")]
    NotASocket(PathBuf),
    #[error("--api-socket: {path}: {source}")]
    Bind {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("--api-socket: fd={fd} is not a listening unix socket: {reason}")]
    BadFd { fd: RawFd, reason: String },
}

/// The bound listener; the socket file (if we made one) is removed when this is dropped.
pub struct ApiSocket {
    pub listener: UnixListener,
    path: Option<PathBuf>,
}

impl ApiSocket {
    pub fn open(config: &ApiSocketConfig) -> Result<Self, ApiSocketError> {
        match config {
            ApiSocketConfig::Path(path) => bind_path(path),
            ApiSocketConfig::Fd(fd) => adopt_fd(*fd),
        }
    }
}

impl Drop for ApiSocket {
    fn drop(&mut self) {
        if let Some(path) = &self.path {
            if let Err(e) = std::fs::remove_file(path) {
                log::warn!("cannot remove the API socket {}: {e}", path.display());
            }
        }
    }
}

fn bind_path(path: &Path) -> Result<ApiSocket, ApiSocketError> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(ApiSocketError::NotASocket(path.to_path_buf()));
        }
        if UnixStream::connect(path).is_ok() {
            return Err(ApiSocketError::InUse(path.to_path_buf()));
        }
        // A socket nobody listens on: left behind by a process that died.
        log::info!("removing the stale API socket {}", path.display());
        std::fs::remove_file(path).map_err(|source| ApiSocketError::Bind {
            path: path.to_path_buf(),
            source,
        })?;
    }
    // Owner-only from the moment the socket exists: bind under a umask of 0177. The process
    // has one thread at this point, so the umask change is seen by nobody else.
    // SAFETY: umask only changes this process's file-creation mask.
    let old = unsafe { libc::umask(0o177) };
    let bound = UnixListener::bind(path);
    // SAFETY: as above; restores the previous mask.
    unsafe { libc::umask(old) };
    let listener = bound.map_err(|source| ApiSocketError::Bind {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(ApiSocket {
        listener,
        path: Some(path.to_path_buf()),
    })
}

fn adopt_fd(fd: RawFd) -> Result<ApiSocket, ApiSocketError> {
    let bad = |reason: String| ApiSocketError::BadFd { fd, reason };
    let mut domain: libc::c_int = 0;
    let mut accepting: libc::c_int = 0;
    for (option, value) in [
        (libc::SO_DOMAIN, &mut domain),
        (libc::SO_ACCEPTCONN, &mut accepting),
    ] {
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into `value`, an int we own; a bad
        // descriptor only makes it fail.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                option,
                (value as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        if rc != 0 {
            return Err(bad(io::Error::last_os_error().to_string()));
        }
    }
    if domain != libc::AF_UNIX {
        return Err(bad("not an AF_UNIX socket".into()));
    }
    if accepting == 0 {
        return Err(bad("the socket is not listening".into()));
    }
    // SAFETY: fd is an open, listening AF_UNIX socket (checked above) that the caller handed
    // to us; from here on we own it.
    let listener = UnixListener::from(unsafe { OwnedFd::from_raw_fd(fd) });
    Ok(ApiSocket {
        listener,
        path: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn temp_path(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("accordion-sock-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("api.sock")
    }

    #[test]
    fn parses_cloud_hypervisor_forms() {
        assert_eq!(
            ApiSocketConfig::parse("path=/tmp/a.sock").unwrap(),
            ApiSocketConfig::Path("/tmp/a.sock".into())
        );
        assert_eq!(
            ApiSocketConfig::parse("/tmp/b.sock").unwrap(),
            ApiSocketConfig::Path("/tmp/b.sock".into())
        );
        assert_eq!(
            ApiSocketConfig::parse("fd=7").unwrap(),
            ApiSocketConfig::Fd(7)
        );
        for bad in ["", "fd=x", "fd=1", "path=", "path=/a,fd=3", "sock=/x"] {
            let e = ApiSocketConfig::parse(bad).unwrap_err();
            assert_eq!(e.option, "--api-socket", "{bad}");
        }
    }

    #[test]
    fn binds_owner_only_and_removes_on_drop() {
        let path = temp_path("bind");
        let sock = ApiSocket::open(&ApiSocketConfig::Path(path.clone())).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        drop(sock);
        assert!(!path.exists());
    }

    #[test]
    fn refuses_a_live_socket_and_replaces_a_stale_one() {
        let path = temp_path("live");
        let live = UnixListener::bind(&path).unwrap();
        let e = ApiSocket::open(&ApiSocketConfig::Path(path.clone()))
            .err()
            .unwrap();
        assert!(matches!(e, ApiSocketError::InUse(_)), "{e}");
        drop(live); // the file stays, nobody listens: stale
        assert!(path.exists());
        let sock = ApiSocket::open(&ApiSocketConfig::Path(path.clone())).unwrap();
        drop(sock);
    }

    #[test]
    fn refuses_a_regular_file() {
        let path = temp_path("file");
        std::fs::write(&path, b"x").unwrap();
        let e = ApiSocket::open(&ApiSocketConfig::Path(path.clone()))
            .err()
            .unwrap();
        assert!(matches!(e, ApiSocketError::NotASocket(_)), "{e}");
        assert!(path.exists());
    }

    #[test]
    fn adopts_a_listening_fd_only() {
        use std::os::fd::IntoRawFd;
        let path = temp_path("fd");
        let listener = UnixListener::bind(&path).unwrap();
        let fd = listener.into_raw_fd();
        let sock = ApiSocket::open(&ApiSocketConfig::Fd(fd)).unwrap();
        drop(sock);
        let (a, _b) = UnixStream::pair().unwrap();
        let fd = a.into_raw_fd();
        let e = ApiSocket::open(&ApiSocketConfig::Fd(fd)).err().unwrap();
        assert!(e.to_string().contains("not listening"), "{e}");
        // SAFETY: fd came from into_raw_fd above and is closed once.
        unsafe { libc::close(fd) };
    }
}
