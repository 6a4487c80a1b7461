//! Object configuration: the INI text format, the keyword catalogs and their value types, the
//! rules every value and node address meets on the way in, references, and how an error
//! quotes input (`echo`). Pure: no I/O, no clock.

pub mod echo;
pub mod ini;
pub mod keywords;
pub mod kind;
pub mod refs;
