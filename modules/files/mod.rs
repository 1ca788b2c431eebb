//! Files: whole files, templates, lines and blocks in them, paths and their attributes.

pub mod blockinfile;
pub mod copy;
pub mod edit;
pub mod file;
pub mod lineinfile;
pub mod template;
