//! decode → encode → decode: whatever the decoder accepts, the encoder
//! reproduces byte for byte (up to the Length field) and decodes again to the
//! same packet.
#![no_main]

use libfuzzer_sys::fuzz_target;
use otpgate_radius_proto::{decode, encode};

fuzz_target!(|data: &[u8]| {
    let Ok(packet) = decode(data) else {
        return;
    };
    let bytes = encode(&packet).expect("a decoded packet encodes");
    assert_eq!(
        Some(bytes.as_slice()),
        data.get(..bytes.len()),
        "encoding differs from the datagram"
    );
    let again = decode(&bytes).expect("an encoded packet decodes");
    assert_eq!(packet, again);
});
