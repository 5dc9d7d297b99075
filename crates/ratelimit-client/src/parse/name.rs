//! Names an upstream chooses (Discord bucket hashes, GitHub resources, IETF policy names) are kept in the
//! client's maps, so their size is bounded at parse time: a name longer than [`MAX_NAME_BYTES`] is kept as
//! a fixed-size digest of itself. Hashing rather than rejecting keeps the evidence the name came with (its
//! counts still bind), and distinct long names stay distinct.

use std::borrow::Cow;
use std::hash::{BuildHasher, Hasher};

/// The longest upstream-chosen name kept as it is (Discord's hashes are 32 hex digits).
pub const MAX_NAME_BYTES: usize = 64;

/// Marks a digest: no protocol's names start with it (Discord's are alphanumeric, and the IETF profile's
/// digests are only ever compared with each other).
const DIGEST_MARK: char = '~';

/// `name` as it is when it is at most [`MAX_NAME_BYTES`] long, otherwise `~` and 16 hex digits of a
/// 64-bit digest of it (17 bytes).
///
/// ```
/// use ratelimit_client::parse::bounded_name;
/// assert_eq!(bounded_name("41f9cd5d28af77da04563bcb1d67fdfd"), "41f9cd5d28af77da04563bcb1d67fdfd");
/// let long = "x".repeat(16 * 1024);
/// assert_eq!(bounded_name(&long).len(), 17);
/// assert_ne!(bounded_name(&long), bounded_name(&format!("{long}y")));
/// ```
pub fn bounded_name(name: &str) -> Cow<'_, str> {
    if name.len() <= MAX_NAME_BYTES {
        return Cow::Borrowed(name);
    }
    let mut h = foldhash::fast::FixedState::with_seed(0x6e61_6d65).build_hasher();
    h.write(name.as_bytes());
    let mut out = String::with_capacity(17);
    out.push(DIGEST_MARK);
    crate::profile::discord::push_hex(&mut out, h.finish());
    Cow::Owned(out)
}
