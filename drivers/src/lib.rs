//! drivers
#![no_std]
