//! Room on the stack for the recursive passes (parse, check, lower, format).
//!
//! They recurse once per nesting level, and the parser admits expressions up to
//! [`MAX_DEPTH`](crate::parser::MAX_DEPTH) deep. A debug build's checker frame is ~13 KiB, so such
//! an expression needs ~3.5 MiB: more than a tokio worker (2 MiB) or a test thread has, which is
//! where `phoenix serve` and the language server compile. Each entry point therefore runs on a
//! fresh stack segment when its thread has less room than [`ROOM`] left.

/// The stack an entry point needs for the deepest input the parser admits, with margin.
pub const ROOM: usize = 8 << 20;
/// The size of a fresh segment (reserved, committed only as it is touched).
const SEGMENT: usize = 16 << 20;

/// Runs `f` with at least [`ROOM`] of stack.
pub fn with_room<R>(f: impl FnOnce() -> R) -> R {
    stacker::maybe_grow(ROOM, SEGMENT, f)
}
