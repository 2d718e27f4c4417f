//! Disk space: how much is free where the store lives, and whether that is enough to commit.
//!
//! The writer asks before each batch, and hands the room above the reserve to the batch's
//! growing ops in turn. A write that fails inside redb latches the database until it is
//! reopened; refusing before redb sees the write keeps it healthy, so the sidecar recovers by
//! itself when space returns. This module only measures and decides; it never writes.

use std::path::Path;

/// Free disk space below which writes that grow the store are refused (see
/// `writer::Writer::refuse_when_disk_is_full`). redb grows its file in steps; this leaves room for one.
pub const DISK_RESERVE: u64 = 64 << 20;

/// Whether there is room to commit with `free` bytes left on the store's file system.
pub fn has_room(free: u64) -> bool {
    free >= DISK_RESERVE
}

/// What a write of `bytes` of records, bodies and index rows may take on disk: redb copies the
/// pages it changes and allocates a large value in a power-of-two run of pages, so up to about
/// twice its size before the old pages are free again.
pub fn growth(bytes: u64) -> u64 {
    bytes.saturating_mul(2)
}

/// The room one batch may grow the store into: the free space above the reserve, handed out to
/// the batch's growing ops in turn, so that no commit (however many bodies it carries) eats into
/// the reserve and fails inside redb.
#[derive(Debug, Clone, Copy)]
pub struct Room {
    /// The free bytes measured before the batch (what a refusal reports).
    pub free: u64,
    left: u64,
}

impl Room {
    pub fn new(free: u64) -> Room {
        Room {
            free,
            left: free.saturating_sub(DISK_RESERVE),
        }
    }

    /// Whether the disk is below the reserve: nothing that grows the store goes through.
    pub fn is_full(&self) -> bool {
        !has_room(self.free)
    }

    /// Takes `bytes` (already passed through [`growth`]) if they fit; false (taking nothing) if
    /// they do not.
    pub fn take(&mut self, bytes: u64) -> bool {
        if self.is_full() || bytes > self.left {
            return false;
        }
        self.left -= bytes;
        true
    }
}

/// Free bytes for unprivileged writers on the file system holding `path`.
pub fn free_space(path: &Path) -> Option<u64> {
    let st = rustix::fs::statvfs(path).ok()?;
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_needs_the_reserve() {
        assert!(!has_room(0));
        assert!(!has_room(DISK_RESERVE - 1));
        assert!(has_room(DISK_RESERVE));
    }

    #[test]
    fn room_is_handed_out_until_it_runs_out() {
        let mut room = Room::new(DISK_RESERVE + 10);
        assert!(room.take(4));
        assert!(!room.take(7), "more than is left");
        assert!(room.take(6));
        assert!(!room.take(1));
        assert!(room.take(0));
        let mut full = Room::new(DISK_RESERVE - 1);
        assert!(full.is_full());
        assert!(!full.take(0), "nothing grows the store below the reserve");
        assert_eq!(growth(u64::MAX), u64::MAX);
    }

    #[test]
    fn free_space_reads_the_file_system() {
        let dir = tempfile::tempdir().unwrap();
        assert!(free_space(dir.path()).is_some_and(|f| f > 0));
        assert_eq!(free_space(&dir.path().join("missing")), None);
    }
}
