//! C ABI (pending).
