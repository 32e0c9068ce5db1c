//! QEMU integration tests
