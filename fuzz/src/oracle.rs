//! SPIFFE ID rules restated from the checklist (§1, §11.1, §11.2), independently of
//! `core/src/id.rs`, for differential checks.

/// ID-6, ID-12: 1 to 255 bytes of `a-z 0-9 . - _`.
pub fn valid_trust_domain(name: &str) -> bool {
    (1..=255).contains(&name.len())
        && name
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'_'))
}

/// ID-13 to ID-18: empty, or `/`-separated segments that are not empty, not `.` or `..`, and
/// made of `a-z A-Z 0-9 . - _`.
pub fn valid_path(path: &str) -> bool {
    if path.is_empty() {
        return true;
    }
    let Some(rest) = path.strip_prefix('/') else {
        return false;
    };
    rest.split('/').all(|segment| {
        !segment.is_empty()
            && segment != "."
            && segment != ".."
            && segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
    })
}

/// ID-1 to ID-25: `spiffe://` (lowercase), a valid trust domain up to the first `/`, a valid
/// path, at most 2048 bytes in all.
pub fn valid_spiffe_id(input: &str) -> bool {
    let Some(rest) = input.strip_prefix("spiffe://") else {
        return false;
    };
    let (trust_domain, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    input.len() <= 2048 && valid_trust_domain(trust_domain) && valid_path(path)
}
