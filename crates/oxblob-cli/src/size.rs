//! Byte sizes on the command line (`4k`, `128KiB`, `1G`, `4096`), parsed exactly as in device
//! specs: every suffix is a power of 1024, as in fio.

pub use oxblob_bdev::spec::{format_size, parse_size};

/// Parses a size that must be non-zero (for clap's `value_parser`).
pub fn parse_nonzero_size(text: &str) -> Result<u64, String> {
    match parse_size(text) {
        Ok(0) => Err(format!("'{text}': size must be greater than zero")),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonzero_sizes() {
        assert_eq!(parse_nonzero_size("4k"), Ok(4096));
        assert_eq!(parse_nonzero_size("128KiB"), Ok(128 * 1024));
        assert_eq!(parse_nonzero_size("1G"), Ok(1 << 30));
        assert!(parse_nonzero_size("0")
            .unwrap_err()
            .contains("greater than zero"));
        assert!(parse_nonzero_size("4q").unwrap_err().contains("4q"));
        assert!(parse_nonzero_size("").is_err());
    }
}
