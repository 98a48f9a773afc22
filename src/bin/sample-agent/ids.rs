//! Random identifiers: instance and task ids, fake Docker ids, name suffixes.

/// `len` random lowercase hex digits from the OS generator.
///
/// Panics if the kernel cannot supply randomness, as std's `HashMap` does:
/// there is no sensible way to go on without it.
pub fn random_hex(len: usize) -> String {
    let mut bytes = vec![0u8; len.div_ceil(2)];
    getrandom::getrandom(&mut bytes).expect("the OS random number generator failed");
    let mut hex = to_hex(&bytes);
    hex.truncate(len);
    hex
}

pub fn to_hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

pub fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_hex_has_the_requested_shape() {
        for len in [7, 8, 32, 64] {
            let hex = random_hex(len);
            assert!(is_lower_hex(&hex, len), "{hex}");
        }
        assert_ne!(random_hex(32), random_hex(32));
    }
}
