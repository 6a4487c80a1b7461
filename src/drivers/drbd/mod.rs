//! DRBD 9: resource files (render, within the bounds of budget), the commands (commands), and
//! what DRBD reports (status).

pub mod budget;
pub mod commands;
pub mod render;
pub mod status;
