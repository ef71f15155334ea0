#![no_main]
//! Superblock decoder: any 4096-byte page decodes or fails with a typed error; a page that
//! decodes re-encodes to the same bytes. Each input is tried twice: as is, and with the magic
//! and checksum fixed up, so the fuzzer also explores the field validation behind the CRC.
use libfuzzer_sys::fuzz_target;
use oxblob_format::Superblock;

fn check(page: &[u8]) {
    if let Ok(sb) = Superblock::decode(page) {
        let again = sb.encode().expect("a decoded superblock re-encodes");
        assert_eq!(again, page);
    }
}

fuzz_target!(|data: &[u8]| {
    let mut page = data.to_vec();
    page.resize(4096, 0);
    check(&page);
    page[..8].copy_from_slice(b"OXBLOBSB");
    page[8..12].copy_from_slice(&1u32.to_le_bytes());
    page[12..16].fill(0);
    let crc = oxblob_format::crc32c(&page);
    page[12..16].copy_from_slice(&crc.to_le_bytes());
    check(&page);
});
