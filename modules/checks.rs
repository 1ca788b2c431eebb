//! Argument checks that modules of several families share, each with one wording.

use crate::module::ArgError;

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
