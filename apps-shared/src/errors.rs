//! How an error is printed: its whole `source()` chain on one line, passwords masked. The
//! apps print their store and config errors this way, the balancer its start-up errors and
//! `--healthcheck` failures, so all three binaries read alike.

/// Formats an error with its whole `source()` chain on one line, passwords masked (see
/// [`mask_passwords`]).
pub fn describe(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        out.push_str(": ");
        out.push_str(&e.to_string());
        cur = e.source();
    }
    mask_passwords(&out)
}

/// `text` with [`mask_password`] applied to each whitespace-separated word that holds a URL
/// or a `password=`: a TOML error quotes the offending line of the file, and a config error
/// must not print the database password it contains.
pub fn mask_passwords(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let (word, tail) = rest.split_at(end);
        if word.contains("://") || word.contains("password=") {
            out.push_str(&mask_password(word));
        } else {
            out.push_str(word);
        }
        let space = tail.len() - tail.trim_start().len();
        out.push_str(&tail[..space]);
        rest = &tail[space..];
    }
    out
}

/// `s` with its passwords replaced by `***`: the one after `user:` in a URL's user info and
/// any `password=` value. Errs on the side of masking too much: an `@` later in the URL (in
/// a query) widens the masked span rather than letting a password through. The placeholder
/// of a documented example (`user:password@`) is left as it is.
pub fn mask_password(s: &str) -> String {
    let mut out = s.to_owned();
    if let Some((scheme, rest)) = s.split_once("://")
        && let Some(at) = rest.rfind('@')
        && let Some(colon) = rest[..at].find(':')
        && &rest[colon + 1..at] != "password"
    {
        out = format!("{scheme}://{}***{}", &rest[..=colon], &rest[at..]);
    }
    let mut from = 0;
    while let Some(pos) = out[from..].find("password=") {
        let start = from + pos + "password=".len();
        let end = out[start..]
            .find(|c: char| c == '&' || c == '"' || c.is_whitespace())
            .map_or(out.len(), |n| start + n);
        out.replace_range(start..end, "***");
        from = start + 3;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_masked_wherever_they_are() {
        assert_eq!(mask_password("postgres://u:p@h/d"), "postgres://u:***@h/d");
        assert_eq!(mask_password("postgres://u@h/d"), "postgres://u@h/d");
        assert_eq!(mask_password("postgres://h/d"), "postgres://h/d");
        assert_eq!(
            mask_password("postgres://u:p/x@y@h/d"),
            "postgres://u:***@h/d",
            "an unencoded / or @ in the password"
        );
        assert_eq!(
            mask_password("postgres://u@h/d?password=p&sslmode=disable"),
            "postgres://u@h/d?password=***&sslmode=disable"
        );
        assert_eq!(mask_password("password=p"), "password=***");
        assert_eq!(
            mask_password("postgres://user:password@host/db"),
            "postgres://user:password@host/db",
            "an example's placeholder"
        );
    }

    #[test]
    fn a_quoted_line_in_an_error_loses_its_password_but_keeps_its_layout() {
        let text = "at line 1\n  |\n1 | url = \"mysql://u:s3cret@db/x\"\n  |  ^^^\nbad \"a password=s3cret b\"";
        let masked = mask_passwords(text);
        assert!(!masked.contains("s3cret"), "{masked}");
        assert!(masked.contains("\"mysql://u:***@db/x\""), "{masked}");
        assert_eq!(masked.lines().count(), text.lines().count());
        assert!(masked.starts_with("at line 1\n  |\n1 | url = "), "{masked}");
    }

    #[test]
    fn the_whole_chain_is_on_one_line() {
        let inner = std::io::Error::other("connection refused");
        let outer = std::io::Error::other(Wrapped(inner));
        assert_eq!(describe(&outer), "cannot reach db: connection refused");
    }

    #[derive(Debug)]
    struct Wrapped(std::io::Error);

    impl std::fmt::Display for Wrapped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("cannot reach db")
        }
    }

    impl std::error::Error for Wrapped {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }
}
