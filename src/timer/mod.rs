//! TEMPORARY stand-in (BTreeMap) until the wheel lands.
use std::collections::BTreeMap;
pub type Tick = u64;
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimerKey(u64);
pub struct Wheel<T> {
    map: BTreeMap<(Tick, u64), T>,
    ids: std::collections::HashMap<u64, Tick>,
    next: u64,
}
impl<T> Wheel<T> {
    pub fn new() -> Self {
        Wheel { map: BTreeMap::new(), ids: Default::default(), next: 0 }
    }
    pub fn insert(&mut self, deadline: Tick, value: T) -> TimerKey {
        self.next += 1;
        self.map.insert((deadline, self.next), value);
        self.ids.insert(self.next, deadline);
        TimerKey(self.next)
    }
    pub fn cancel(&mut self, key: TimerKey) -> Option<T> {
        let d = self.ids.remove(&key.0)?;
        self.map.remove(&(d, key.0))
    }
    pub fn next_deadline(&self) -> Option<Tick> {
        self.map.keys().next().map(|k| k.0)
    }
    pub fn poll(&mut self, now: Tick) -> Option<T> {
        let k = *self.map.keys().next()?;
        if k.0 > now {
            return None;
        }
        self.ids.remove(&k.1);
        self.map.remove(&k)
    }
    pub fn len(&self) -> usize {
        self.map.len()
    }
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
    pub fn memory_bytes(&self) -> usize {
        self.map.len() * 48
    }
}
impl<T> Default for Wheel<T> {
    fn default() -> Self {
        Self::new()
    }
}
pub const ENTRY_BYTES: usize = 48;
