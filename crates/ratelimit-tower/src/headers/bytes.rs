//! How header bytes are written: a stack buffer, interned `&'static` values, decimal and base64 writers.

use http::HeaderValue;

/// One header value under construction: on the stack (128 bytes covers three or four policies),
/// spilling to the heap only for longer lists. Turning it into a `HeaderValue` is the one allocation.
/// Not larger: the buffer is zeroed on every request (no `unsafe` here), and 256 bytes took a `memset`
/// call where 128 are a few vector stores.
pub(crate) struct Buf {
    stack: [u8; 128],
    len: usize,
    heap: Vec<u8>,
}

impl Buf {
    #[inline]
    pub(crate) fn new() -> Self {
        Buf {
            stack: [0; 128],
            len: 0,
            heap: Vec::new(),
        }
    }

    #[inline]
    pub(crate) fn push(&mut self, s: &[u8]) {
        if self.heap.is_empty() && self.len + s.len() <= self.stack.len() {
            self.stack[self.len..self.len + s.len()].copy_from_slice(s);
            self.len += s.len();
        } else {
            if self.heap.is_empty() {
                self.heap.extend_from_slice(&self.stack[..self.len]);
            }
            self.heap.extend_from_slice(s);
        }
    }

    /// Appends `v` in decimal.
    #[inline]
    pub(crate) fn push_u64(&mut self, v: u64) {
        let n = decimal_len(v);
        if self.heap.is_empty() && self.len + n <= self.stack.len() {
            // Straight into place: no scratch buffer, no variable-length copy.
            write_decimal(&mut self.stack[self.len..self.len + n], v);
            self.len += n;
        } else {
            let mut tmp = [0u8; 20];
            write_decimal(&mut tmp[..n], v);
            self.push(&tmp[..n]);
        }
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        if self.heap.is_empty() {
            &self.stack[..self.len]
        } else {
            &self.heap
        }
    }

    /// The value.
    pub(crate) fn value(&self) -> Option<HeaderValue> {
        HeaderValue::from_bytes(self.as_bytes()).ok()
    }

    /// The value of a field rendered once and sent on many responses (`RateLimit-Policy`), as a
    /// `&'static` value: cloning and dropping it are plain copies, where a shared value costs two atomic
    /// reference-count updates per response on a cache line every worker thread writes.
    pub(crate) fn static_value(&self) -> Option<HeaderValue> {
        interned_value(self.as_bytes())
    }
}

/// How many distinct values [`interned_value`] keeps: each is leaked once and reused for the life of the
/// process, so a program that changes its policies at run time forever (a tier per customer, rebuilt
/// every minute) stays bounded; past the cap values are reference-counted as usual.
pub(super) const MAX_INTERNED: usize = 4096;

/// The most bytes [`interned_value`] leaks in all: policy names are configuration, but a program that
/// builds tiers from outside data (customer names, a tenant's header) must not leak without bound
/// through long ones. Past it, values are reference-counted as usual.
pub(super) const MAX_INTERNED_BYTES: usize = 1024 * 1024;

/// Values leaked so far, for reuse, and their total length.
#[derive(Default)]
pub(super) struct InternTable {
    pub(super) values: std::collections::HashSet<&'static str>,
    pub(super) bytes: usize,
}

/// The caps of an intern table (tests use small ones).
#[derive(Clone, Copy)]
pub(super) struct InternCaps {
    pub(super) values: usize,
    pub(super) bytes: usize,
}

pub(super) type Interned = std::sync::Mutex<Option<InternTable>>;

pub(super) static INTERNED: Interned = std::sync::Mutex::new(None);

/// `bytes` as a `&'static` header value, leaked once per distinct value (at most [`MAX_INTERNED`]
/// values and [`MAX_INTERNED_BYTES`] bytes).
pub(super) fn interned_value(bytes: &[u8]) -> Option<HeaderValue> {
    let caps = InternCaps {
        values: MAX_INTERNED,
        bytes: MAX_INTERNED_BYTES,
    };
    intern_in(&INTERNED, caps, bytes)
}

/// [`interned_value`] over a given table and caps (tests use their own).
pub(super) fn intern_in(table: &Interned, caps: InternCaps, bytes: &[u8]) -> Option<HeaderValue> {
    let value = HeaderValue::from_bytes(bytes).ok()?;
    // `HeaderValue::from_static` accepts visible ASCII and tabs only (it panics on anything else, which
    // `from_bytes` allows); what we render is ASCII, but check rather than trust.
    let Some(s) = std::str::from_utf8(bytes)
        .ok()
        .filter(|s| s.bytes().all(|b| b == b'\t' || (32..127).contains(&b)))
    else {
        return Some(value);
    };
    match intern_str_in(table, caps, s) {
        Some(s) => Some(HeaderValue::from_static(s)),
        None => Some(value),
    }
}

/// `s` leaked once per distinct value, in the same table and within the same caps as header values
/// (policy names handed to every admitted request); `None` past the caps.
pub(crate) fn interned_str(s: &str) -> Option<&'static str> {
    let caps = InternCaps {
        values: MAX_INTERNED,
        bytes: MAX_INTERNED_BYTES,
    };
    intern_str_in(&INTERNED, caps, s)
}

pub(super) fn intern_str_in(table: &Interned, caps: InternCaps, s: &str) -> Option<&'static str> {
    let mut table = table.lock().unwrap_or_else(|p| p.into_inner());
    let table = table.get_or_insert_with(Default::default);
    if let Some(s) = table.values.get(s) {
        return Some(s);
    }
    if table.values.len() >= caps.values || table.bytes + s.len() > caps.bytes {
        return None;
    }
    let leaked: &'static str = Box::leak(Box::from(s));
    table.values.insert(leaked);
    table.bytes += leaked.len();
    Some(leaked)
}

/// The number of decimal digits of `v`.
#[inline]
pub(super) fn decimal_len(v: u64) -> usize {
    v.checked_ilog10().map_or(1, |l| l as usize + 1)
}

/// Writes `v` in decimal into `out`, which is exactly [`decimal_len`]`(v)` bytes long; two digits per
/// division (the values are up to 15 digits; a digit at a time was a visible share of a request's cost).
#[inline]
pub(super) fn write_decimal(out: &mut [u8], mut v: u64) {
    let mut i = out.len();
    while v >= 100 {
        let r = (v % 100) as usize * 2;
        v /= 100;
        i -= 2;
        out[i..i + 2].copy_from_slice(&DIGIT_PAIRS[r..r + 2]);
    }
    if v >= 10 {
        let r = v as usize * 2;
        out[i - 2..i].copy_from_slice(&DIGIT_PAIRS[r..r + 2]);
    } else {
        out[i - 1] = b'0' + v as u8;
    }
}

/// "00" to "99", for [`Buf::push_u64`].
pub(super) const DIGIT_PAIRS: [u8; 200] = {
    let mut t = [0u8; 200];
    let mut i = 0;
    while i < 100 {
        t[2 * i] = b'0' + (i / 10) as u8;
        t[2 * i + 1] = b'0' + (i % 10) as u8;
        i += 1;
    }
    t
};

/// A header value holding an integer.
#[inline]
pub(crate) fn int_value(v: u64) -> HeaderValue {
    HeaderValue::from(v)
}

/// Standard base64 (with padding) of exactly 12 bytes: 16 characters, no padding needed.
pub(super) fn base64_12(input: &[u8; 12], out: &mut [u8; 16]) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (chunk, o) in input.chunks_exact(3).zip(out.chunks_exact_mut(4)) {
        let n = (u32::from(chunk[0]) << 16) | (u32::from(chunk[1]) << 8) | u32::from(chunk[2]);
        o[0] = ALPHABET[(n >> 18) as usize & 63];
        o[1] = ALPHABET[(n >> 12) as usize & 63];
        o[2] = ALPHABET[(n >> 6) as usize & 63];
        o[3] = ALPHABET[n as usize & 63];
    }
}
