//! Running the real `nft`, with its stderr kept (the `nftables` crate's own
//! helper drops it, which leaves errors empty).

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use nftables::schema::Nftables;

#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("cannot run `{program}`: {source} (is the nftables package installed?)")]
    Spawn { program: String, source: std::io::Error },
    #[error("nft refused the ruleset:\n{stderr}")]
    Refused { stderr: String },
    #[error("nft output is not valid JSON: {0}")]
    BadOutput(String),
    #[error("cannot read nf_tables over netlink: {0}")]
    Kernel(std::io::Error),
    #[error("cannot make a scratch network namespace for the exact drift check: {0}")]
    Scratch(std::io::Error),
}

/// Runs `f` on a thread of its own in a new, empty network namespace (nft
/// started from that thread and netlink sockets opened there live in it
/// too); the namespace goes away with the thread.
pub fn in_scratch_netns<T: Send>(f: impl FnOnce() -> T + Send) -> Result<T, NftError> {
    std::thread::scope(|s| {
        let worker = s.spawn(|| {
            // SAFETY: unshare only changes this thread's network namespace.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return Err(NftError::Scratch(std::io::Error::last_os_error()));
            }
            Ok(f())
        });
        worker.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// How to call nft.
#[derive(Clone, Debug)]
pub struct Nft {
    pub program: PathBuf,
}

impl Default for Nft {
    fn default() -> Self {
        Nft { program: std::env::var_os("PHANTOMC_NFT").map_or_else(|| PathBuf::from("nft"), PathBuf::from) }
    }
}

impl Nft {
    /// Runs nft with `args`, feeding `input` on stdin; stdout on success.
    pub fn run(&self, args: &[&str], input: Option<&str>) -> Result<String, NftError> {
        run_program(&mut Command::new(&self.program), args, input)
    }

    /// `nft -j -f -` of a batch: one atomic transaction.
    pub fn load_json(&self, batch: &Nftables<'_>) -> Result<(), NftError> {
        self.run(&["-j", "-f", "-"], Some(&super::to_json(batch))).map(drop)
    }

    /// Asked of the kernel over netlink: nft 1.0.6 reads every set element
    /// to list even the tables.
    pub fn table_exists(&self, table: &str) -> Result<bool, NftError> {
        super::kernel::table_exists(table).map_err(NftError::Kernel)
    }
}

/// The objects of an `nft -j list` answer.
pub fn objects(v: &serde_json::Value) -> impl Iterator<Item = &serde_json::Value> {
    v.get("nftables").and_then(|a| a.as_array()).into_iter().flatten()
}

/// Write to a child's stdin. The CLI keeps SIGPIPE's default action (so
/// `phantomc ... | head` ends quietly), which would kill the whole process
/// when the child has already exited; SIGPIPE is blocked for this thread
/// during the write, so it fails with EPIPE instead, and a signal left
/// pending by it is taken before the mask is restored.
pub fn write_to_child(stdin: &mut impl Write, bytes: &[u8]) -> std::io::Result<()> {
    // SAFETY: plain signal-mask calls on this thread with valid, zeroed sets.
    unsafe {
        let mut pipe: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut pipe);
        libc::sigaddset(&mut pipe, libc::SIGPIPE);
        libc::pthread_sigmask(libc::SIG_BLOCK, &pipe, &mut old);
        let result = stdin.write_all(bytes);
        if result.as_ref().is_err_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) {
            let now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
            libc::sigtimedwait(&pipe, std::ptr::null_mut(), &now);
        }
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        result
    }
}

fn run_program(cmd: &mut Command, args: &[&str], input: Option<&str>) -> Result<String, NftError> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let mut child = cmd
        .args(args)
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| NftError::Spawn { program: program.clone(), source })?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        // A write error means nft exited early; its stderr says why.
        let _ = write_to_child(&mut stdin, text.as_bytes());
    }
    let out = child.wait_with_output().map_err(|source| NftError::Spawn { program, source })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let mut stderr = String::from_utf8_lossy(&out.stderr).trim_end().to_string();
        if stderr.is_empty() {
            stderr = format!("exited with {}", out.status);
        }
        Err(NftError::Refused { stderr })
    }
}
