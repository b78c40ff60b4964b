//! arm64
#![no_std]
