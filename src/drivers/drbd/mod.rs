//! DRBD 9: reading its status (the driver proper, rendering and commands, is to come).

pub mod render;
pub mod status;
