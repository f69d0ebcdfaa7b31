//! Bounded reading of input files (policy includes, local feed files): only
//! regular files, never blocking, never more than a cap.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// Why an input file was not read.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("it is a {0}, not a regular file")]
    NotRegular(&'static str),
    #[error("it is larger than the cap of {cap} bytes")]
    TooLarge { cap: u64 },
}

/// A byte cap from the environment variable `var`, or `default`.
pub fn cap_from_env(var: &str, default: u64) -> u64 {
    std::env::var(var).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(default)
}

/// Reads a regular file of at most `cap` bytes. The type is checked before
/// opening (a FIFO or device is never opened) and again on the open handle
/// (a FIFO swapped in meanwhile cannot block: the open is non-blocking).
pub fn read_regular(path: &Path, cap: u64) -> Result<Vec<u8>, InputError> {
    check_regular(&std::fs::metadata(path)?.file_type())?;
    let file = OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path)?;
    check_regular(&file.metadata()?.file_type())?;
    read_capped(file, cap)
}

/// Reads at most `cap` bytes of any file (cap + 1 are read to detect excess).
pub fn read_capped(file: File, cap: u64) -> Result<Vec<u8>, InputError> {
    let mut bytes = Vec::new();
    file.take(cap.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > cap {
        return Err(InputError::TooLarge { cap });
    }
    Ok(bytes)
}

fn check_regular(kind: &std::fs::FileType) -> Result<(), InputError> {
    let what = if kind.is_file() {
        return Ok(());
    } else if kind.is_dir() {
        "directory"
    } else if kind.is_fifo() {
        "FIFO"
    } else if kind.is_socket() {
        "socket"
    } else if kind.is_char_device() {
        "character device"
    } else if kind.is_block_device() {
        "block device"
    } else {
        "special file"
    };
    Err(InputError::NotRegular(what))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_devices_fifos_and_directories_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert!(matches!(read_regular(&fifo, 10), Err(InputError::NotRegular("FIFO"))));
        assert!(matches!(read_regular(Path::new("/dev/zero"), 10), Err(InputError::NotRegular("character device"))));
        assert!(matches!(read_regular(dir.path(), 10), Err(InputError::NotRegular("directory"))));
    }

    #[test]
    fn reads_up_to_the_cap_and_refuses_more() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"0123456789").unwrap();
        assert_eq!(read_regular(&file, 10).unwrap(), b"0123456789");
        assert!(matches!(read_regular(&file, 9), Err(InputError::TooLarge { cap: 9 })));
    }
}
