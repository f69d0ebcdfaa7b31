//! Reads of the kernel shared by concurrent requests (the dashboard polls
//! several endpoints at once), without ever answering with a read older
//! than the request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

/// A value read for a key. A request reuses a read only if it started
/// after the request arrived: requests that wait behind one read share the
/// next one, and nobody sees a state older than their own request.
pub struct Shared<K, T> {
    slot: Mutex<Option<(Instant, K, Arc<T>)>>,
    /// Reads made (not shared answers): `/metrics` shows them.
    reads: AtomicU64,
}

impl<K, T> Default for Shared<K, T> {
    fn default() -> Self {
        Shared { slot: Mutex::new(None), reads: AtomicU64::new(0) }
    }
}

impl<K, T> Shared<K, T> {
    /// How many reads were made since the start.
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }
}

impl<K: PartialEq, T> Shared<K, T> {
    pub fn get<E>(&self, key: K, read: impl FnOnce() -> Result<T, E>) -> Result<Arc<T>, E> {
        let arrived = Instant::now();
        let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((started, k, v)) = slot.as_ref() {
            if *k == key && *started >= arrived {
                return Ok(v.clone());
            }
        }
        let started = Instant::now();
        self.reads.fetch_add(1, Ordering::Relaxed);
        let v = Arc::new(read()?);
        *slot = Some((started, key, v.clone()));
        Ok(v)
    }
}

/// A value that depends only on its key (what a policy compiles to in the
/// kernel), kept until the key changes.
pub struct Memo<K, T> {
    slot: Mutex<Option<(K, Arc<T>)>>,
}

impl<K, T> Default for Memo<K, T> {
    fn default() -> Self {
        Memo { slot: Mutex::new(None) }
    }
}

impl<K: PartialEq, T> Memo<K, T> {
    pub fn get<E>(&self, key: K, read: impl FnOnce() -> Result<T, E>) -> Result<Arc<T>, E> {
        let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((k, v)) = slot.as_ref() {
            if *k == key {
                return Ok(v.clone());
            }
        }
        let v = Arc::new(read()?);
        *slot = Some((key, v.clone()));
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[test]
    fn waiting_requests_share_the_next_read_and_never_get_an_older_one() {
        let shared: Shared<&str, usize> = Shared::default();
        let reads = AtomicUsize::new(0);
        let read = || -> Result<usize, ()> {
            std::thread::sleep(Duration::from_millis(50));
            Ok(reads.fetch_add(1, Ordering::SeqCst) + 1)
        };
        std::thread::scope(|s| {
            let answers: Vec<_> = (0..6).map(|_| s.spawn(|| *shared.get("a", read).unwrap())).collect();
            for a in answers {
                assert!(a.join().unwrap() <= 2);
            }
        });
        // One read for the first request, at most one more for all that waited behind it.
        assert!(reads.load(Ordering::SeqCst) <= 2, "{}", reads.load(Ordering::SeqCst));
        assert_eq!(shared.reads(), reads.load(Ordering::SeqCst) as u64, "the count /metrics shows");
        let before = reads.load(Ordering::SeqCst);
        assert_eq!(*shared.get("a", read).unwrap(), before + 1, "a later request reads again");
        assert!(shared.get("b", || Err::<usize, ()>(())).is_err(), "another key is another read");
    }

    #[test]
    fn a_memo_reads_once_per_key() {
        let memo: Memo<u8, u8> = Memo::default();
        assert_eq!(*memo.get(1, || Ok::<_, ()>(10)).unwrap(), 10);
        assert_eq!(*memo.get(1, || Err(())).unwrap(), 10);
        assert_eq!(*memo.get(2, || Ok::<_, ()>(20)).unwrap(), 20);
    }
}
