//! Placeholder; filled in by issue 7 (the Discord simulator).
