//! Bearer-token and display-name checks on arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| chat_server::fuzzing::credentials(data));
