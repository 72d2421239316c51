//! Molt control plane.
