//! Object configuration: the INI text format, the keyword catalogs and their value types, and
//! references. Pure: no I/O, no clock.

pub mod ini;
pub mod keywords;
pub mod kind;
pub mod refs;
