//! A request line on the status socket (any local user with access to it may send one).
#![no_main]

use libfuzzer_sys::fuzz_target;
use selfheal_agent::report::status::parse_request;

fuzz_target!(|data: &[u8]| {
    if let Ok(line) = std::str::from_utf8(data) {
        let _ = parse_request(line);
    }
});
