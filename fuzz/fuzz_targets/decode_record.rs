#![no_main]
//! Log record decoder (header, payload CRC) and the Txn/Link payload decoders.
use libfuzzer_sys::fuzz_target;
use oxblob_format::record;

fuzz_target!(|data: &[u8]| {
    if let Ok((h, payload)) = record::decode_record(data) {
        let _ = record::decode_txn(payload);
        let _ = record::decode_link(payload);
        assert!(h.pages() >= 1);
    }
    // The payload decoders also see raw bytes, as if a CRC collided.
    if let Ok(ms) = record::decode_txn(data) {
        let again = record::encode_txn(&ms).expect("a decoded txn re-encodes");
        assert_eq!(record::decode_txn(&again).expect("round trip"), ms);
    }
});
