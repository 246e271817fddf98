//! selfheal's kernel programs. The `selfheal` binary (src/main.rs) is the object the agent
//! loads; this library exists so that the agent can declare a build-dependency on the crate
//! and be rebuilt when the programs change.
#![no_std]
