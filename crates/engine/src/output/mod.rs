//! The model's reply as structure: tool calls and reasoning separated from
//! the answer text.
//!
//! [`tool_format`] says which tool-call format a model writes (detected from
//! its chat template) and the literal envelope of one call, for the parsers
//! and for grammars that force a call.

pub mod tool_format;

pub use tool_format::{CallShape, DeepSeekStyle, Envelope, MistralStyle, ToolFormat, ToolSyntax};
