//! guest runtime
#![no_std]
