//! What the requests of modules of several families share: argument checks, each with one
//! wording, and common choices.

use crate::module::ArgError;

/// The `state: present|absent` choice of the modules that put something on the host or take it
/// away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Presence {
    Present,
    Absent,
}

/// `value` of `param` must be an absolute path.
pub fn absolute_path(param: &'static str, value: &str) -> Result<(), ArgError> {
    if value.starts_with('/') {
        Ok(())
    } else {
        Err(ArgError::invalid(
            param,
            format!("{param} must be an absolute path, got {value:?}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::module::ArgErrorKind;

    #[test]
    fn absolute_paths() {
        assert!(absolute_path("path", "/etc/x").is_ok());
        let e = absolute_path("path", "etc/x").unwrap_err();
        assert_eq!((e.kind, e.param), (ArgErrorKind::Invalid, "path"));
        assert_eq!(e.msg, "path must be an absolute path, got \"etc/x\"");
    }
}
