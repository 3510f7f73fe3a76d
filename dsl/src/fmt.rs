//! `phoenix fmt`: canonical layout of a `.phx` file. (Being written.)
