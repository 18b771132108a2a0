//! Poison-tolerant locking.
//!
//! A `std::sync::Mutex` is poisoned when a thread panics while holding it.
//! Every piece of state we guard with one stays consistent between
//! statements (counters, maps updated in one call), so a panic elsewhere is
//! no reason to fail every later caller: we take the guard either way.

use std::sync::{Mutex, MutexGuard};

/// Locks `mutex`, taking the guard even if a previous holder panicked.
pub fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_poisoned_mutex_still_locks() {
        let shared = Arc::new(Mutex::new(1));
        let holder = shared.clone();
        let panicked = std::thread::spawn(move || {
            let _guard = holder.lock().unwrap();
            panic!("poison it");
        })
        .join();
        assert!(panicked.is_err());
        assert!(shared.is_poisoned());
        *lock(&shared) += 1;
        assert_eq!(*lock(&shared), 2);
    }
}
