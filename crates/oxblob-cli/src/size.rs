//! Byte sizes on the command line: `4k`, `128K`, `64MiB`, `1GiB`, `4096`.
//!
//! Every suffix is a power of 1024, as in fio: `k`, `K`, `KB` and `KiB` all mean 1024 bytes.
//! A bare number is bytes. Fractions are not accepted (`1.5G` is an error), so a size is always
//! an exact number of bytes.

/// Parses a size such as `4k`, `128KiB`, `1G` or `4096` into bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("empty size".to_string());
    }
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    if digits_end == 0 {
        return Err(format!(
            "'{text}' is not a size (expected a number with an optional unit, e.g. 4k, 64MiB, 1G)"
        ));
    }
    let (num, unit) = t.split_at(digits_end);
    let value: u64 = num
        .parse()
        .map_err(|_| format!("'{text}': number too large"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        other => {
            return Err(format!(
                "'{text}': unknown unit '{other}' (use k, M, G or T; KiB, MiB, GiB, TiB also work)"
            ))
        }
    };
    value
        .checked_mul(1u64 << shift)
        .ok_or_else(|| format!("'{text}' is too large"))
}

/// Parses a size that must be non-zero (for clap's `value_parser`).
pub fn parse_nonzero_size(text: &str) -> Result<u64, String> {
    match parse_size(text)? {
        0 => Err(format!("'{text}': size must be greater than zero")),
        n => Ok(n),
    }
}

/// Formats a byte count with the largest binary unit that divides it exactly: `4KiB`, `1GiB`,
/// and `1536B` (1.5 KiB is not a whole number of KiB). The result parses back with
/// [`parse_size`].
pub fn format_size(bytes: u64) -> String {
    const UNITS: [(&str, u32); 4] = [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)];
    for (name, shift) in UNITS {
        let unit = 1u64 << shift;
        if bytes >= unit && bytes % unit == 0 {
            return format!("{}{name}", bytes >> shift);
        }
    }
    format!("{bytes}B")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_as_powers_of_1024() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("4k"), Ok(4096));
        assert_eq!(parse_size("4K"), Ok(4096));
        assert_eq!(parse_size("4KiB"), Ok(4096));
        assert_eq!(parse_size("128kb"), Ok(128 * 1024));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("2TiB"), Ok(2 << 40));
        assert_eq!(parse_size("512B"), Ok(512));
        assert_eq!(parse_size(" 8k "), Ok(8192));
    }

    #[test]
    fn rejects_bad_sizes() {
        for bad in ["", "k", "abc", "1.5G", "4x", "-4k", "99999999999999999999"] {
            assert!(parse_size(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(parse_size("17000000000T").is_err(), "overflow must be an error");
        assert!(parse_nonzero_size("0").is_err());
        assert_eq!(parse_nonzero_size("1k"), Ok(1024));
    }

    #[test]
    fn formats_exact_units() {
        assert_eq!(format_size(4096), "4KiB");
        assert_eq!(format_size(1 << 30), "1GiB");
        assert_eq!(format_size(1536), "1536B");
        assert_eq!(format_size(3 << 10), "3KiB");
        assert_eq!(format_size(0), "0B");
        for n in [512u64, 4096, 131072, 1 << 20, 3 << 30, 12345] {
            assert_eq!(parse_size(&format_size(n)), Ok(n), "round trip of {n}");
        }
    }
}
