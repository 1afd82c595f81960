//! gRPC status codes as label values: the canonical names of the gRPC specification
//! (`OK`, `NOT_FOUND`, …), so that the label takes at most 17 values.

/// The canonical name of the gRPC status code `code`; `UNKNOWN` for a number outside the
/// specification.
pub fn code_name(code: i32) -> &'static str {
    match code {
        0 => "OK",
        1 => "CANCELLED",
        3 => "INVALID_ARGUMENT",
        4 => "DEADLINE_EXCEEDED",
        5 => "NOT_FOUND",
        6 => "ALREADY_EXISTS",
        7 => "PERMISSION_DENIED",
        8 => "RESOURCE_EXHAUSTED",
        9 => "FAILED_PRECONDITION",
        10 => "ABORTED",
        11 => "OUT_OF_RANGE",
        12 => "UNIMPLEMENTED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        15 => "DATA_LOSS",
        16 => "UNAUTHENTICATED",
        _ => "UNKNOWN",
    }
}

/// The code named by a `grpc-status` header value (ASCII digits); `None` when absent or not a
/// number.
pub fn parse_status(value: Option<&[u8]>) -> Option<i32> {
    std::str::from_utf8(value?).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_have_their_canonical_names() {
        assert_eq!(code_name(0), "OK");
        assert_eq!(code_name(14), "UNAVAILABLE");
        assert_eq!(code_name(2), "UNKNOWN");
        assert_eq!(code_name(99), "UNKNOWN");
        assert_eq!(parse_status(Some(b"5")), Some(5));
        assert_eq!(parse_status(Some(b"x")), None);
        assert_eq!(parse_status(None), None);
    }
}
