//! Placeholder while the SDK is written.
