//! The applier: on every node, reconciles what the log says with what the drivers see. The
//! pure `plan` decides; the loop around it (to come) observes, executes and reports.

pub mod plan;
