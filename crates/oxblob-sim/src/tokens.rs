//! Token remapping shared by the wrapper channels.
//!
//! A wrapper submits every request to its inner channel under a token of its own, so it can keep
//! per-request state next to the caller's token whatever tokens the caller uses (callers may reuse
//! a token once its completion was reaped, and several wrappers may be stacked).

use std::collections::HashMap;

/// Maps the wrapper's inner tokens to the caller's token plus per-request state `T`.
pub(crate) struct TokenMap<T> {
    next: u64,
    map: HashMap<u64, (u64, T)>,
}

impl<T> TokenMap<T> {
    /// An empty map.
    pub(crate) fn new() -> Self {
        TokenMap {
            next: 0,
            map: HashMap::new(),
        }
    }

    /// Remembers `caller` and `state`; returns the token to give the inner channel.
    pub(crate) fn insert(&mut self, caller: u64, state: T) -> u64 {
        let token = self.next;
        self.next = self.next.wrapping_add(1);
        self.map.insert(token, (caller, state));
        token
    }

    /// Forgets the inner token `inner`, returning the caller's token and the state.
    pub(crate) fn remove(&mut self, inner: u64) -> Option<(u64, T)> {
        self.map.remove(&inner)
    }
}
