//! Command-line entry point (filled in by the relay and operations work).
fn main() {}
