//! Drivers for the systems a node manages: one module per external system. The only code
//! that runs external commands or talks to libvirt.

pub mod drbd;
