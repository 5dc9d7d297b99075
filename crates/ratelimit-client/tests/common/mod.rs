//! Shared by the integration tests.

pub mod upstream;
