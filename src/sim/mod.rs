//! Simulators for machines without the real systems (no DRBD kernel module, no LVM, no
//! libvirt): they keep their state in a directory every simulated node shares and refuse
//! what the real systems refuse. The DRBD one is command-compatible and reached through the
//! real DRBD driver, via the `omsim` binary.

pub mod drbd;
#[cfg(test)]
mod drbd_tests;
