//! A process-local memory by string key, bounded: past its capacity it starts over, and each
//! entry it forgot costs its owner one lookup again.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

pub struct BoundedMap<V> {
    entries: Mutex<HashMap<String, V>>,
    capacity: usize,
}

impl<V: Clone> BoundedMap<V> {
    pub fn new(capacity: usize) -> Self {
        Self { entries: Mutex::default(), capacity }
    }

    pub fn get(&self, key: &str) -> Option<V> {
        self.entries().get(key).cloned()
    }

    pub fn insert(&self, key: &str, value: V) {
        let mut entries = self.entries();
        if entries.len() >= self.capacity && !entries.contains_key(key) {
            entries.clear();
        }
        entries.insert(key.to_owned(), value);
    }

    pub fn remove(&self, key: &str) {
        self.entries().remove(key);
    }

    /// The map; a holder that panicked left it whole (every change is one map call).
    fn entries(&self) -> MutexGuard<'_, HashMap<String, V>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_starts_over_past_its_capacity() {
        let map = BoundedMap::new(2);
        map.insert("a", 1);
        map.insert("b", 2);
        map.insert("b", 3);
        assert_eq!((map.get("a"), map.get("b")), (Some(1), Some(3)));
        map.insert("c", 4);
        assert_eq!((map.get("a"), map.get("b"), map.get("c")), (None, None, Some(4)));
        map.remove("c");
        assert_eq!(map.get("c"), None);
    }
}
