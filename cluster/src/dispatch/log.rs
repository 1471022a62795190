//! What the dispatcher reads of a group's own log, behind a small trait so its rules are unit
//! tested on a log held in memory.

use anyhow::Result;
use gregor_storage::{GroupId, Store};

/// A group's log as the dispatcher sees it: entries (floor, last] are stored, entries at or
/// below the floor were removed (committed and applied, so every later leader holds them).
pub(crate) trait LogView {
    /// Index and term of the newest entry; the floor's when no entry is stored.
    fn last(&self) -> Result<(u64, u64)>;
    /// Index and term of the last removed entry; (0, 0) when nothing was removed.
    fn floor(&self) -> Result<(u64, u64)>;
    /// (index, term) of the stored entries in [start, stop), ascending.
    fn terms(&self, start: u64, stop: u64) -> Result<Vec<(u64, u64)>>;

    /// The term of the stored entry at `index`, if there is one.
    fn term_at(&self, index: u64) -> Result<Option<u64>> {
        Ok(self
            .terms(index, index.saturating_add(1))?
            .first()
            .filter(|(i, _)| *i == index)
            .map(|(_, term)| *term))
    }

    /// The term of entry `index` whether stored or the floor itself; `None` below the floor
    /// or past the end.
    fn term_of(&self, index: u64) -> Result<Option<u64>> {
        let (floor, floor_term) = self.floor()?;
        if index == floor {
            return Ok(Some(floor_term));
        }
        if index < floor {
            return Ok(None);
        }
        self.term_at(index)
    }
}

/// The production view: the group's rows in the node's store.
pub(crate) struct StoredLog<'a> {
    pub(crate) store: &'a Store,
    pub(crate) group: GroupId,
}

impl LogView for StoredLog<'_> {
    fn last(&self) -> Result<(u64, u64)> {
        match self.store.last_entry(self.group)? {
            Some(entry) => Ok((entry.index, entry.term)),
            None => self.floor(),
        }
    }

    fn floor(&self) -> Result<(u64, u64)> {
        let floor = self.store.log_floor(self.group)?;
        Ok((floor.index, floor.term))
    }

    fn terms(&self, start: u64, stop: u64) -> Result<Vec<(u64, u64)>> {
        Ok(self
            .store
            .read_entries(self.group, start, stop)?
            .into_iter()
            .map(|entry| (entry.index, entry.term))
            .collect())
    }
}

/// A log in memory, for the rules' unit tests: `terms[i]` is the term of entry `floor + 1 + i`.
#[cfg(test)]
pub(crate) struct MemoryLog {
    pub(crate) floor: (u64, u64),
    pub(crate) terms: Vec<u64>,
}

#[cfg(test)]
impl LogView for MemoryLog {
    fn last(&self) -> Result<(u64, u64)> {
        Ok(match self.terms.last() {
            Some(term) => (self.floor.0 + self.terms.len() as u64, *term),
            None => self.floor,
        })
    }

    fn floor(&self) -> Result<(u64, u64)> {
        Ok(self.floor)
    }

    fn terms(&self, start: u64, stop: u64) -> Result<Vec<(u64, u64)>> {
        Ok((start.max(self.floor.0 + 1)..stop)
            .filter_map(|index| {
                let slot = usize::try_from(index - self.floor.0 - 1).ok()?;
                self.terms.get(slot).map(|term| (index, *term))
            })
            .collect())
    }
}
