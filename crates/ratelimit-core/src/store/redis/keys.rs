//! Key names: `prefix:{hash}:policy`.
//!
//! The identity (an API key, a user id, an address) is hashed with SHA-256 and the first 16 bytes are
//! written as 32 hex digits: a fixed-length name whatever the identity's length, that does not reveal the
//! identity to anyone who can read Redis (`KEYS *`, `MONITOR`, an RDB dump). The braces are a Redis
//! Cluster hash tag: every policy of one identity lands in the same slot, so a multi-policy check is one
//! script call with all its keys declared and never a `CROSSSLOT` error.

use sha2::{Digest, Sha256};

/// The 128-bit hash of an identity.
pub(crate) type IdentityHash = [u8; 16];

/// Hashes an identity.
#[inline]
pub(crate) fn hash_identity(identity: &[u8]) -> IdentityHash {
    let digest = Sha256::digest(identity);
    let mut out = [0u8; 16];
    out.copy_from_slice(&digest[..16]);
    out
}

/// `prefix:{hex}:` for an identity hash, into `buf` (cleared first).
pub(crate) fn key_base(buf: &mut String, prefix: &str, hash: &IdentityHash) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    buf.clear();
    buf.reserve(prefix.len() + 36 + 16);
    buf.push_str(prefix);
    buf.push_str(":{");
    for b in hash {
        buf.push(HEX[usize::from(b >> 4)] as char);
        buf.push(HEX[usize::from(b & 15)] as char);
    }
    buf.push_str("}:");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_length_and_tagged() {
        let mut a = String::new();
        key_base(&mut a, "rl", &hash_identity(b"alice"));
        let mut b = String::new();
        key_base(&mut b, "rl", &hash_identity(&[b'x'; 100_000]));
        assert_eq!(a.len(), b.len());
        assert!(a.starts_with("rl:{") && a.ends_with("}:"));
        assert!(!a.contains("alice"));
    }
}
