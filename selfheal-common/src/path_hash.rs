//! FNV-1a over cgroup paths: the kernel hashes the path of each new cgroup and looks the hash
//! up in `WATCHED_PATHS`; the agent hashes the unit paths it inserts there. One function, used
//! by both sides, so they agree by construction.

pub const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
pub const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Folds one byte into a running hash (start from [`FNV_OFFSET`]).
#[inline(always)]
pub const fn fold(hash: u64, byte: u8) -> u64 {
    (hash ^ byte as u64).wrapping_mul(FNV_PRIME)
}

/// Hash of a whole cgroup path such as `/system.slice/web.service` (no trailing slash).
pub fn path_hash(path: &[u8]) -> u64 {
    let mut hash = FNV_OFFSET;
    let mut i = 0;
    while i < path.len() {
        hash = fold(hash, path[i]);
        i += 1;
    }
    hash
}
