//! The applier: on every node, reconciles what the log says with what the drivers see. The
//! pure `plan` decides; `desired` reads what the log wants; `run` is the loop that observes,
//! executes and reports.

pub mod desired;
pub mod migration;
pub mod plan;
pub mod run;
