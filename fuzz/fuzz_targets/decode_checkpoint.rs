#![no_main]
//! Checkpoint decoder: decodes or fails with a typed error; a decoded checkpoint round-trips.
use libfuzzer_sys::fuzz_target;
use oxblob_format::Checkpoint;

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = Checkpoint::decode(data) {
        let again = c.encode().expect("a decoded checkpoint re-encodes");
        assert_eq!(again, data);
    }
});
