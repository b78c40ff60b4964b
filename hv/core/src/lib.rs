//! Core
#![no_std]
