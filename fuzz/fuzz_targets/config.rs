//! The config loader: any text must give a config or an error naming where it is wrong.
#![no_main]

use libfuzzer_sys::fuzz_target;
use selfheal_agent::config::Config;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Config::parse(text, "fuzz.toml");
    }
});
