//! The suite every store backend must pass. Filled in with the backends.
