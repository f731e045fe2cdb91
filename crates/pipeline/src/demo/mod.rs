//! What `novyra demo` and the tests use to make data and check it: the
//! curriculum and student generator and the summary with its checks.

pub mod live;
pub mod loadgen;
pub mod summary;
