//! DRBD 9: resource files (render), the commands (commands), and what DRBD reports (status).

pub mod commands;
pub mod render;
pub mod status;
