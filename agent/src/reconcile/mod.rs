//! The reconciler's loop (its rules: `slotd_core::node::reconcile`).

pub mod run;

#[cfg(test)]
mod shell_tests;
