#![no_main]
//! Blob record decoder: decodes or fails with a typed error; a decoded record round-trips.
use libfuzzer_sys::fuzz_target;
use oxblob_format::BlobRecord;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = BlobRecord::decode(data) {
        let again = r.encode().expect("a decoded record re-encodes");
        assert_eq!(again, data);
    }
});
