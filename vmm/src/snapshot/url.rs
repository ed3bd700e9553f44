//! Snapshot locations as Cloud Hypervisor writes them: `file:///absolute/dir`.

use std::path::PathBuf;

use super::SnapshotError;

/// The directory a `file://` URL names. Only local, absolute paths.
pub fn directory(url: &str, field: &str) -> Result<PathBuf, SnapshotError> {
    let path = url.strip_prefix("file://").ok_or_else(|| {
        SnapshotError::Url(format!(
            "{field} {url:?} is not a file:// URL (file:///path/to/dir)"
        ))
    })?;
    if !path.starts_with('/') || path.len() < 2 {
        return Err(SnapshotError::Url(format!(
            "{field} {url:?} does not name an absolute directory (file:///path/to/dir)"
        )));
    }
    Ok(PathBuf::from(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_urls_give_their_directory_and_others_are_refused() {
        assert_eq!(
            directory("file:///tmp/snap", "destination_url").unwrap(),
            PathBuf::from("/tmp/snap")
        );
        for bad in [
            "/tmp/snap",
            "file://tmp/snap",
            "file:///",
            "tcp:1.2.3.4:5",
            "",
        ] {
            let e = directory(bad, "destination_url").unwrap_err().to_string();
            assert!(e.contains("destination_url"), "{e}");
        }
    }
}
