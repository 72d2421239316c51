//! Environment variables for Apps: keys are POSIX names, values are single
//! lines without NUL.

/// Checks an environment variable name: letters, digits and `_`, not
/// starting with a digit.
pub fn validate_key(key: &str) -> Result<(), String> {
    let ok = key
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && key.len() <= 256
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not a valid variable name: use letters, digits and `_`, not starting with a digit",
            key.chars().take(80).collect::<String>()
        ))
    }
}

/// Checks a value: no newline and no NUL, which the engine cannot pass on.
pub fn validate_value(key: &str, value: &str) -> Result<(), String> {
    if value.contains('\0') {
        return Err(format!(
            "the value of `{key}` contains a NUL byte, which cannot be passed to a container"
        ));
    }
    if value.contains('\n') || value.contains('\r') {
        return Err(format!(
            "the value of `{key}` contains a line break; give it on one line"
        ));
    }
    Ok(())
}

/// Splits `KEY=VALUE` and validates both halves.
pub fn parse_assignment(raw: &str) -> Result<(String, String), String> {
    let (k, v) = raw
        .split_once('=')
        .ok_or_else(|| format!("`{raw}` is not KEY=VALUE"))?;
    validate_key(k)?;
    validate_value(k, v)?;
    Ok((k.to_string(), v.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        assert!(validate_key("DATABASE_URL").is_ok());
        assert!(validate_key("_x1").is_ok());
        assert!(validate_key("1X").is_err());
        assert!(validate_key("A-B").is_err());
        assert!(validate_key("").is_err());
    }

    #[test]
    fn assignments() {
        assert_eq!(
            parse_assignment("A=b=c").unwrap(),
            ("A".into(), "b=c".into())
        );
        assert_eq!(parse_assignment("A=").unwrap(), ("A".into(), "".into()));
        assert!(parse_assignment("A").is_err());
        assert!(parse_assignment("A=x\ny").is_err());
        assert!(parse_assignment("A=x\0").is_err());
    }
}
