//! API keys for keyed feeds: where a feed's secret comes from, and a type
//! that holds it without ever printing it.
//!
//! The policy names only where the key is (`key-file`, `key-env`,
//! `key-credential`); the key is read at each download, so a rotated key is
//! picked up without a reload and never reaches the compiled policy.

use std::fmt;
use std::path::PathBuf;

/// Largest key file read: keys are short; a big file is a mistake.
const MAX_KEY_BYTES: u64 = 4096;

/// Where a feed's key comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySource {
    /// `key-file "/etc/phantomc/keys/abuseipdb"`.
    File(PathBuf),
    /// `key-env ABUSEIPDB_KEY`.
    Env(String),
    /// `key-credential abuseipdb`: `$CREDENTIALS_DIRECTORY/abuseipdb`, as
    /// systemd's `LoadCredential=` provides it.
    Credential(String),
}

impl KeySource {
    /// The policy option this source was written as, and its value.
    pub fn option(&self) -> (&'static str, String) {
        match self {
            KeySource::File(p) => ("key-file", p.display().to_string()),
            KeySource::Env(n) => ("key-env", n.clone()),
            KeySource::Credential(n) => ("key-credential", n.clone()),
        }
    }

    /// Reads the key. Errors say where the key should have been, never
    /// what was found there.
    pub fn read(&self) -> Result<Secret, String> {
        let text = match self {
            KeySource::File(path) => read_file(path)?,
            KeySource::Env(name) => match std::env::var(name) {
                Ok(v) => v,
                Err(std::env::VarError::NotPresent) => return Err(format!("environment variable {name} is not set")),
                Err(std::env::VarError::NotUnicode(_)) => {
                    return Err(format!("environment variable {name} is not valid UTF-8"))
                }
            },
            KeySource::Credential(name) => {
                let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") else {
                    return Err(format!(
                        "credential {name}: $CREDENTIALS_DIRECTORY is not set (run under systemd with \
                         LoadCredential={name}:/path/to/key, or use key-file)"
                    ));
                };
                read_file(&PathBuf::from(dir).join(name))?
            }
        };
        let key = text.trim();
        if key.is_empty() {
            return Err(format!("{} {} is empty", self.option().0, self.option().1));
        }
        // A header value cannot hold control characters; say so without
        // showing the key.
        if key.chars().any(|c| c.is_control()) {
            return Err(format!("{} {} holds control characters or several lines", self.option().0, self.option().1));
        }
        Ok(Secret(key.to_string()))
    }
}

fn read_file(path: &std::path::Path) -> Result<String, String> {
    let shown = path.display();
    let bytes = crate::input::read_regular(path, MAX_KEY_BYTES).map_err(|e| match e {
        crate::input::InputError::TooLarge { .. } => {
            format!("key file {shown} is larger than {MAX_KEY_BYTES} bytes: not a key")
        }
        other => format!("cannot read key file {shown}: {other}"),
    })?;
    String::from_utf8(bytes).map_err(|_| format!("cannot read key file {shown}: not UTF-8 text"))
}

/// A key. `Debug` and `Display` print a placeholder; only [`Secret::expose`]
/// gives the text, for the one request header that needs it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The `Authorization` value for HTTP Basic, the key being `user:password`.
    pub fn basic(&self) -> Secret {
        Secret(format!("Basic {}", base64(self.0.as_bytes())))
    }

    /// `text` with every occurrence of the key replaced: for error messages
    /// from libraries that might echo a request back.
    pub fn redact(&self, text: &str) -> String {
        text.replace(&self.0, "[key]")
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([key])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[key]")
    }
}

/// Standard base64 (RFC 4648, padded), for HTTP Basic credentials.
pub fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_read_trimmed_and_never_printed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("k");
        std::fs::write(&file, "s3cr3t-value\n").unwrap();
        let secret = KeySource::File(file.clone()).read().unwrap();
        assert_eq!(secret.expose(), "s3cr3t-value");
        assert_eq!(format!("{secret} {secret:?}"), "[key] Secret([key])");
        assert_eq!(secret.redact("GET /?k=s3cr3t-value"), "GET /?k=[key]");
        std::fs::write(&file, "two\nlines\n").unwrap();
        let err = KeySource::File(file.clone()).read().unwrap_err();
        assert!(err.contains("several lines") && !err.contains("two"), "{err}");
        let missing = KeySource::File(dir.path().join("none")).read().unwrap_err();
        assert!(missing.starts_with("cannot read key file") && missing.contains("none"), "{missing}");
        let unset = KeySource::Env("PHANTOMC_TEST_SURELY_UNSET_KEY".into()).read().unwrap_err();
        assert_eq!(unset, "environment variable PHANTOMC_TEST_SURELY_UNSET_KEY is not set");
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        let cases =
            [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="), ("foobar", "Zm9vYmFy")];
        for (plain, encoded) in cases {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
    }
}
