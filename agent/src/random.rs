//! Random numbers for ids that must be neither guessed nor repeated (fence
//! tickets), from the kernel. The pure cores never draw: callers pass ids in.

use std::hash::{BuildHasher, Hasher};
use std::io::Read;

/// 64 random bits from `/dev/urandom`; if that cannot be read, from the
/// standard library's randomly keyed hasher over the time (still unique
/// within the process and unpredictable from outside).
pub fn u64() -> u64 {
    let mut buf = [0u8; 8];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut buf));
    match read {
        Ok(()) => u64::from_ne_bytes(buf),
        Err(_) => {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u128(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos()),
            );
            h.finish()
        }
    }
}
