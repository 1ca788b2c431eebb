//! Values computed once per run and shared by every host: the same template, regular expression
//! or parameter default comes up for each of a hundred hosts, and building it costs far more than
//! using it.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Mutex, OnceLock};

/// A process-wide map from a key to what was built from it. Meant for `static`s.
pub struct Memo<K, V>(OnceLock<Mutex<HashMap<K, V>>>);

impl<K: Eq + Hash, V: Clone> Memo<K, V> {
    pub const fn new() -> Self {
        Memo(OnceLock::new())
    }

    /// The value for `key`, built by `make` the first time. A failure is not remembered.
    pub fn get_or_try<Q, E>(&self, key: &Q, make: impl FnOnce() -> Result<V, E>) -> Result<V, E>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let map = self.0.get_or_init(Default::default);
        if let Some(v) = map.lock().unwrap_or_else(|e| e.into_inner()).get(key) {
            return Ok(v.clone());
        }
        // Built without the lock: two hosts may build the same value once each, never wait.
        let v = make()?;
        map.lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.to_owned(), v.clone());
        Ok(v)
    }
}

impl<K: Eq + Hash, V: Clone> Default for Memo<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn builds_once_per_key_and_forgets_failures() {
        let memo: Memo<String, usize> = Memo::new();
        let built = Cell::new(0);
        let make = |n: usize| {
            built.set(built.get() + 1);
            Ok::<_, ()>(n)
        };
        assert_eq!(memo.get_or_try("a", || make(1)), Ok(1));
        assert_eq!(memo.get_or_try("a", || make(2)), Ok(1));
        assert_eq!(memo.get_or_try("b", || make(3)), Ok(3));
        assert_eq!(built.get(), 2);
        assert_eq!(memo.get_or_try("c", || Err::<usize, _>("bad")), Err("bad"));
        assert_eq!(memo.get_or_try("c", || make(4)), Ok(4));
    }
}
