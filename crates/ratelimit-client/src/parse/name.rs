//! Names an upstream chooses (Discord bucket hashes, GitHub resources, IETF policy names) are kept in the
//! client's maps, so their size is bounded at parse time: a name longer than [`MAX_NAME_BYTES`] is kept as
//! a fixed-size digest of itself. Hashing rather than rejecting keeps the evidence the name came with (its
//! counts still bind), and distinct long names stay distinct. Route templates, which come from request
//! paths, are bounded the same way (keeping a readable prefix) when they become keys.

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
    crate::hex::push_hex(&mut out, h.finish());
    Cow::Owned(out)
}

/// The longest route template kept as it is in a route key (Discord's longest is under 100 bytes).
pub(crate) const MAX_TEMPLATE_BYTES: usize = 192;

/// `template` as it is when at most [`MAX_TEMPLATE_BYTES`] long, otherwise its first bytes (cut at a
/// character boundary) and `~` with 16 hex digits of a digest of the whole: readable in logs and metric
/// labels, distinct for distinct templates, and bounded.
pub(crate) fn bounded_template(template: &str) -> Cow<'_, str> {
    if template.len() <= MAX_TEMPLATE_BYTES {
        return Cow::Borrowed(template);
    }
    let digest = bounded_name(template);
    let mut cut = MAX_TEMPLATE_BYTES - digest.len();
    while !template.is_char_boundary(cut) {
        cut -= 1;
    }
    Cow::Owned(format!("{}{digest}", &template[..cut]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_templates_keep_a_prefix_and_stay_distinct() {
        assert_eq!(bounded_template("GET /gateway"), "GET /gateway");
        let a = format!("GET /{}", "é".repeat(200));
        let b = format!("{a}x");
        let (ba, bb) = (bounded_template(&a), bounded_template(&b));
        assert!(ba.len() <= MAX_TEMPLATE_BYTES && bb.len() <= MAX_TEMPLATE_BYTES);
        assert!(ba.starts_with("GET /é"));
        assert_ne!(ba, bb);
    }
}
