//! Key component tags: the byte before each component of a [`KeyBuf`](super::KeyBuf), so that a user id
//! and an IP address with the same bytes never share a bucket.
//!
//! Every tag the crate writes is reserved here. A tag is 7 bits (`0x00..=0x7e`): the high bit marks a
//! hashed component (`tag | 0x80`), and `0xff` marks a key folded into a hash when it overflowed, so
//! `0x7f` is never a tag.
//!
//! | tag | component |
//! |---|---|
//! | [`USER`] `u` | a verified user ([`User`](super::User)) |
//! | [`API_KEY`] `k` | an API key, always hashed ([`ApiKey`](super::ApiKey)) |
//! | [`ROUTE`] `r` | a matched route template ([`Route`](super::Route)) |
//! | [`GLOBAL`] `g` | one key for everything ([`Global`](super::Global), `OnKeyError::UseGlobalKey`) |
//! | [`IPV4`] `4`, [`IPV6`] `6` | a client address ([`ClientIp`](super::ClientIp), IPv6 by /64) |
//! | [`GLOBAL_CAP`] `G` | the global cap's shared key (the layer's own) |
//!
//! Printable ASCII (`0x20..=0x7e`) belongs to the crate (today's tags and tomorrow's). **Custom
//! extractors use [`CUSTOM`]** (`0x01..=0x1f`), through [`custom`]: a tag from there never collides with
//! a built-in extractor's, whatever this crate adds later. In debug builds, [`KeyBuf::push`] panics on a
//! tag that is neither built in nor custom.
//!
//! [`KeyBuf::push`]: super::KeyBuf::push
//!
//! ```
//! use ratelimit_tower::key::{tag, KeyBuf, KeyError, KeyFn};
//!
//! /// Tenants, from a header an upstream gateway has already authenticated.
//! const TENANT: u8 = tag::custom(0);
//!
//! let by_tenant = KeyFn::new(|req, key: &mut KeyBuf| {
//!     let t = req.headers().get("x-tenant").ok_or(KeyError::Missing("x-tenant header"))?;
//!     key.push(TENANT, t.as_bytes());
//!     Ok(())
//! });
//! # let _ = by_tenant;
//! ```

use std::ops::RangeInclusive;

/// A verified user id.
pub const USER: u8 = b'u';
/// An API key (hashed).
pub const API_KEY: u8 = b'k';
/// A matched route template.
pub const ROUTE: u8 = b'r';
/// One key shared by every request.
pub const GLOBAL: u8 = b'g';
/// An IPv4 client address.
pub const IPV4: u8 = b'4';
/// An IPv6 client network (/64).
pub const IPV6: u8 = b'6';
/// The global cap's key, shared by every client of a layer.
pub const GLOBAL_CAP: u8 = b'G';

/// Every tag the crate writes today.
pub const BUILT_IN: [u8; 7] = [USER, API_KEY, ROUTE, GLOBAL, IPV4, IPV6, GLOBAL_CAP];

/// The tags free for custom extractors: control bytes, which no built-in extractor will ever use.
pub const CUSTOM: RangeInclusive<u8> = 0x01..=0x1f;

/// The `n`th custom tag (`n` from 0 to 30). In a `const`, an `n` out of range fails to compile.
///
/// ```
/// use ratelimit_tower::key::tag;
///
/// const TENANT: u8 = tag::custom(0);
/// const REGION: u8 = tag::custom(1);
/// assert!(tag::CUSTOM.contains(&TENANT) && TENANT != REGION);
/// ```
pub const fn custom(n: u8) -> u8 {
    assert!(
        n < *CUSTOM.end() - *CUSTOM.start() + 1,
        "custom key tags are numbered 0 to 30"
    );
    *CUSTOM.start() + n
}

/// Whether `tag` is one the crate writes or one of the [`CUSTOM`] range.
pub const fn is_valid(tag: u8) -> bool {
    if tag >= *CUSTOM.start() && tag <= *CUSTOM.end() {
        return true;
    }
    let mut i = 0;
    while i < BUILT_IN.len() {
        if BUILT_IN[i] == tag {
            return true;
        }
        i += 1;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_tags_are_distinct_printable_and_outside_the_custom_range() {
        for (i, t) in BUILT_IN.iter().enumerate() {
            assert!((0x20..=0x7e).contains(t), "{t:#x}");
            assert!(!CUSTOM.contains(t), "{t:#x}");
            assert!(!BUILT_IN[i + 1..].contains(t), "{t:#x} twice");
        }
    }

    #[test]
    fn custom_tags_cover_the_range() {
        assert_eq!(custom(0), *CUSTOM.start());
        assert_eq!(custom(30), *CUSTOM.end());
        assert!(CUSTOM.clone().all(is_valid));
        assert!(!is_valid(b't') && !is_valid(0x7f) && !is_valid(0) && !is_valid(0x80));
    }
}
