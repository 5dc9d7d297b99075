//! Lower-case hexadecimal digits of a `u64`, for keys and names built on the hot path (a credential digest
//! in a route key, a webhook token's digest in a Discord major, a long name's digest) without the
//! formatting machinery.

/// The hex alphabet, lower case (what `{:x}` writes).
const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// `v` as 16 lower-case hex digits (what `{:016x}` writes).
pub(crate) fn hex16(v: u64) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (i, d) in out.iter_mut().enumerate() {
        *d = DIGITS[((v >> ((15 - i) * 4)) & 0xf) as usize];
    }
    out
}

/// Appends `v` as 16 lower-case hex digits.
pub(crate) fn push_hex(out: &mut String, v: u64) {
    out.extend(hex16(v).iter().map(|&b| char::from(b)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_digits_match_the_formatter() {
        for v in [0, 1, 0xdead_beef, u64::MAX, 0x0123_4567_89ab_cdef] {
            let mut s = String::new();
            push_hex(&mut s, v);
            assert_eq!(s, format!("{v:016x}"));
            assert_eq!(&hex16(v), format!("{v:016x}").as_bytes());
        }
    }
}
