//! The `chat` console: a full-screen terminal UI when stdin is a terminal,
//! a plain line mode otherwise. Both speak the same commands.

pub mod command;
mod describe;
pub mod line;
mod own;
pub mod tui;
