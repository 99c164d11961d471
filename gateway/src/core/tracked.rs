//! A `BTreeMap` that remembers which entries a transition touched, and what they were before.
//!
//! The core mutates a site's state freely; the engines need to know exactly what changed: the
//! Redis engine writes only the touched entries (a transition costs what it changes, not what
//! the site holds), and [`crate::core::handle`] restores the pre-images when a command is
//! rejected, so a refused command leaves the state untouched by construction.
//!
//! Every mutable access records the entry's pre-image on first touch. Reads never record.
//! After a transition the engine reads [`Tracked::changes`], then either keeps them
//! ([`Tracked::clear_touched`]) or puts the pre-images back ([`Tracked::rollback`]).
//! There is deliberately no `iter_mut`/`values_mut`: a transition names what it changes.

use std::borrow::Borrow;
use std::collections::btree_map;
use std::collections::BTreeMap;
use std::ops::Index;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone)]
pub struct Tracked<K: Ord + Clone, V: Clone> {
    map: BTreeMap<K, V>,
    /// Entries touched since the last [`Tracked::clear_touched`] or [`Tracked::rollback`],
    /// with their value before the first touch (`None`: the entry did not exist).
    touched: BTreeMap<K, Option<V>>,
}

impl<K: Ord + Clone, V: Clone> Default for Tracked<K, V> {
    fn default() -> Self {
        Tracked {
            map: BTreeMap::new(),
            touched: BTreeMap::new(),
        }
    }
}

/// Two maps are equal when their entries are; what was touched is bookkeeping.
impl<K: Ord + Clone, V: Clone + PartialEq> PartialEq for Tracked<K, V> {
    fn eq(&self, other: &Self) -> bool {
        self.map == other.map
    }
}

impl<K: Ord + Clone, V: Clone> Tracked<K, V> {
    fn touch(&mut self, k: &K) {
        if !self.touched.contains_key(k) {
            let before = self.map.get(k).cloned();
            self.touched.insert(k.clone(), before);
        }
    }

    pub fn get<Q>(&self, k: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.map.get(k)
    }

    pub fn contains_key<Q>(&self, k: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.map.contains_key(k)
    }

    pub fn get_mut(&mut self, k: &K) -> Option<&mut V> {
        if !self.map.contains_key(k) {
            return None;
        }
        self.touch(k);
        self.map.get_mut(k)
    }

    pub fn insert(&mut self, k: K, v: V) -> Option<V> {
        self.touch(&k);
        self.map.insert(k, v)
    }

    pub fn remove(&mut self, k: &K) -> Option<V> {
        if !self.map.contains_key(k) {
            return None;
        }
        self.touch(k);
        self.map.remove(k)
    }

    /// The entry for `k`, created with `f` when absent; either way it counts as touched.
    pub fn get_or_insert_with(&mut self, k: K, f: impl FnOnce() -> V) -> &mut V {
        self.touch(&k);
        self.map.entry(k).or_insert_with(f)
    }

    pub fn iter(&self) -> btree_map::Iter<'_, K, V> {
        self.map.iter()
    }

    pub fn keys(&self) -> btree_map::Keys<'_, K, V> {
        self.map.keys()
    }

    pub fn values(&self) -> btree_map::Values<'_, K, V> {
        self.map.values()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Whether anything was touched since the last take or rollback.
    pub fn is_touched(&self) -> bool {
        !self.touched.is_empty()
    }

    /// The touched entries with their current value (`None`: removed).
    pub fn changes(&self) -> impl Iterator<Item = (&K, Option<&V>)> {
        self.touched.keys().map(|k| (k, self.map.get(k)))
    }

    /// Forgets what was touched, keeping the current values.
    pub fn clear_touched(&mut self) {
        self.touched.clear();
    }

    /// Puts every touched entry back as it was before its first touch.
    pub fn rollback(&mut self) {
        for (k, before) in std::mem::take(&mut self.touched) {
            match before {
                Some(v) => {
                    self.map.insert(k, v);
                }
                None => {
                    self.map.remove(&k);
                }
            }
        }
    }

    /// Sets an entry from outside a transition (an engine applying another node's change);
    /// it is not recorded as touched.
    pub fn apply(&mut self, k: K, v: Option<V>) {
        match v {
            Some(v) => {
                self.map.insert(k, v);
            }
            None => {
                self.map.remove(&k);
            }
        }
    }
}

impl<K: Ord + Clone, V: Clone> Index<&K> for Tracked<K, V> {
    type Output = V;

    fn index(&self, k: &K) -> &V {
        &self.map[k]
    }
}

impl<K: Ord + Clone, V: Clone> FromIterator<(K, V)> for Tracked<K, V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Tracked {
            map: iter.into_iter().collect(),
            touched: BTreeMap::new(),
        }
    }
}

impl<'a, K: Ord + Clone, V: Clone> IntoIterator for &'a Tracked<K, V> {
    type Item = (&'a K, &'a V);
    type IntoIter = btree_map::Iter<'a, K, V>;

    fn into_iter(self) -> Self::IntoIter {
        self.map.iter()
    }
}

impl<K: Ord + Clone + Serialize, V: Clone + Serialize> Serialize for Tracked<K, V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.map.serialize(s)
    }
}

impl<'de, K, V> Deserialize<'de> for Tracked<K, V>
where
    K: Ord + Clone + Deserialize<'de>,
    V: Clone + Deserialize<'de>,
{
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Tracked {
            map: BTreeMap::deserialize(d)?,
            touched: BTreeMap::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_first_preimage_and_rolls_back() {
        let mut m: Tracked<u32, String> = [(1, "a".to_owned()), (2, "b".to_owned())]
            .into_iter()
            .collect();
        m.get_mut(&1).unwrap().push('x');
        m.get_mut(&1).unwrap().push('y');
        m.remove(&2);
        m.insert(3, "c".into());
        assert_eq!(m.get(&1).map(String::as_str), Some("axy"));
        m.rollback();
        assert_eq!(m.get(&1).map(String::as_str), Some("a"));
        assert_eq!(m.get(&2).map(String::as_str), Some("b"));
        assert!(!m.contains_key(&3));
        assert!(!m.is_touched());
    }

    #[test]
    fn reads_do_not_touch_and_changes_report_removals() {
        let mut m: Tracked<u32, u32> = [(1, 10), (2, 20)].into_iter().collect();
        let _ = m.get(&1);
        let _ = m.iter().count();
        assert!(m.get_mut(&9).is_none());
        assert!(m.remove(&9).is_none());
        assert!(!m.is_touched());
        *m.get_or_insert_with(5, || 50) += 1;
        m.remove(&2);
        let changes: Vec<(u32, Option<u32>)> = m.changes().map(|(k, v)| (*k, v.copied())).collect();
        assert_eq!(changes, vec![(2, None), (5, Some(51))]);
        m.clear_touched();
        assert!(!m.is_touched());
        assert_eq!(m.get(&5), Some(&51));
    }
}
