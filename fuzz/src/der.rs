//! Just enough DER to take a certificate apart and put one together around a fuzzed
//! TBSCertificate.

/// The DER encoding of a tag, length and `contents`.
pub fn tlv(tag: u8, contents: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = contents.len();
    if len < 0x80 {
        out.push(u8::try_from(len).unwrap_or(0));
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | u8::try_from(bytes.len() - skip).unwrap_or(0));
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(contents);
    out
}

/// Splits the first element off `input`: (whole element, contents, rest). `None` when it is
/// not a well-formed definite-length element.
pub fn element(input: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    let (_, after_tag) = input.split_first()?;
    let (&first, after_len) = after_tag.split_first()?;
    let (len, header) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || after_len.len() < count {
            return None;
        }
        let len = after_len[..count]
            .iter()
            .fold(0usize, |len, b| (len << 8) | usize::from(*b));
        (len, 2 + count)
    };
    let end = header.checked_add(len)?;
    (input.len() >= end).then(|| (&input[..end], &input[header..end], &input[end..]))
}

/// The TBSCertificate (the signed part, with its header) of a DER certificate.
pub fn tbs_of(certificate: &[u8]) -> Option<&[u8]> {
    let (_, contents, _) = element(certificate)?;
    let (tbs, _, _) = element(contents)?;
    Some(tbs)
}

/// `AlgorithmIdentifier` of ecdsa-with-SHA256 (RFC 5758), parameters absent.
pub const ECDSA_WITH_SHA256: &[u8] = &[
    0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02,
];

/// `Certificate ::= SEQUENCE { tbs, ecdsa-with-SHA256, BIT STRING signature }`.
pub fn certificate(tbs: &[u8], signature: &[u8]) -> Vec<u8> {
    let mut bits = vec![0u8];
    bits.extend_from_slice(signature);
    let mut contents = tbs.to_vec();
    contents.extend_from_slice(ECDSA_WITH_SHA256);
    contents.extend_from_slice(&tlv(0x03, &bits));
    tlv(0x30, &contents)
}
