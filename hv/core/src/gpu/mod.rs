//! The pure core of the GPU mediator (DESIGN.md §5).
//!
//! - [`gtt::VirtualGtt`]: a partition's virtual global GTT.

pub mod gtt;
pub mod scan;
