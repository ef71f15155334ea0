#![no_main]
//! Superblock decoder: any 4096-byte page decodes or fails with a typed error; a page that
//! decodes re-encodes to the same bytes.
use libfuzzer_sys::fuzz_target;
use oxblob_format::Superblock;

fuzz_target!(|data: &[u8]| {
    let mut page = data.to_vec();
    page.resize(4096, 0);
    if let Ok(sb) = Superblock::decode(&page) {
        let again = sb.encode().expect("a decoded superblock re-encodes");
        assert_eq!(again, page);
    }
});
