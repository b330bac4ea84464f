#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| weave_fuzz::tcp_segment(data));
