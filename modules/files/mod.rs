//! Files: whole files, templates, lines and blocks in them, paths and their attributes.

pub mod edit;
