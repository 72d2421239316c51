//! Unit tests of the deploy executor against the in-memory fakes.
