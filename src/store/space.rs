//! Disk space: how much is free where the store lives, and whether that is enough to commit.
//!
//! The writer asks before each batch. A write that fails inside redb latches the database until
//! it is reopened; refusing before redb sees the write keeps it healthy, so the sidecar recovers
//! by itself when space returns. This module only measures and decides; it never writes.

use std::path::Path;

/// Free disk space below which writes that grow the store are refused (see
/// `writer::Writer::refuse_when_disk_is_full`). redb grows its file in steps; this leaves room for one.
pub const DISK_RESERVE: u64 = 64 << 20;

/// Whether there is room to commit with `free` bytes left on the store's file system.
pub fn has_room(free: u64) -> bool {
    free >= DISK_RESERVE
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
    fn free_space_reads_the_file_system() {
        let dir = tempfile::tempdir().unwrap();
        assert!(free_space(dir.path()).is_some_and(|f| f > 0));
        assert_eq!(free_space(&dir.path().join("missing")), None);
    }
}
