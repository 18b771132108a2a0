//! Client frame decoding and request validation on arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| chat_server::fuzzing::client_frame(data));
