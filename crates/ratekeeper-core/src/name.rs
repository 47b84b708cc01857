//! Limit names and their validation.

use std::borrow::Borrow;
use std::fmt;

use crate::error::NameError;

/// The longest name a limit may have, in characters.
pub const MAX_NAME_LEN: usize = 128;

/// A validated limit name: 1–128 characters of `A-Z a-z 0-9 . _ - :`,
/// other than `.` and `..`; a name may end in `*` after at least one other
/// character, which makes it a template (`tenant:*`).
///
/// The colon is allowed so that users can namespace their limits
/// (`vendor:stripe`, `tag:db`); everything that would need escaping in a URL
/// path or a shell is not.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LimitName(Box<str>);

impl LimitName {
    /// Checks `name` and wraps it, or says exactly what is wrong with it.
    pub fn new(name: &str) -> Result<Self, NameError> {
        validate(name)?;
        Ok(LimitName(name.into()))
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// For a template (`tenant:*`), the prefix its keys start with
    /// (`tenant:`).
    pub fn template_prefix(&self) -> Option<&str> {
        template_prefix(&self.0)
    }
}

/// For a template name (`tenant:*`), the prefix its keys start with.
pub fn template_prefix(name: &str) -> Option<&str> {
    name.strip_suffix('*')
}

/// A key a template would apply to, for messages: `tenant:*` → `tenant:acme`.
pub fn example_key(template: &str) -> String {
    format!("{}acme", template_prefix(template).unwrap_or(template))
}

/// Checks a name without allocating.
pub(crate) fn validate(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    let len = name.chars().count();
    if len > MAX_NAME_LEN {
        return Err(NameError::TooLong { len });
    }
    if name == "." || name == ".." {
        return Err(NameError::PathStep { name: name.into() });
    }
    let last = len - 1;
    if let Some((position, _)) = name
        .chars()
        .enumerate()
        .find(|&(i, ch)| ch == '*' && (i != last || i == 0))
    {
        return Err(NameError::Star {
            name: name.to_owned(),
            position,
        });
    }
    match name
        .chars()
        .enumerate()
        .find(|&(i, ch)| !(is_name_char(ch) || ch == '*' && i == last))
    {
        Some((position, ch)) => Err(NameError::BadChar {
            name: name.to_owned(),
            ch,
            position,
        }),
        None => Ok(()),
    }
}

fn is_name_char(ch: char) -> bool {
    ch.is_ascii_alphanumeric() || matches!(ch, '.' | '_' | '-' | ':')
}

impl Borrow<str> for LimitName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for LimitName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for LimitName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_allowed_characters_are_accepted() {
        for name in [
            "db",
            "vendor:stripe",
            "tag:db.v2_east-1",
            "A",
            &"x".repeat(128),
        ] {
            assert_eq!(LimitName::new(name).unwrap().as_str(), name);
        }
    }

    #[test]
    fn a_star_may_only_end_a_name_of_two_characters_or_more() {
        let template = LimitName::new("tenant:*").unwrap();
        assert_eq!(template.template_prefix(), Some("tenant:"));
        assert_eq!(LimitName::new("tenant").unwrap().template_prefix(), None);
        for (name, position) in [("*", 0), ("a*b", 1), ("**", 0), ("a**", 1), ("*a", 0)] {
            let err = LimitName::new(name).unwrap_err();
            assert_eq!(
                err,
                NameError::Star {
                    name: name.into(),
                    position
                },
                "{name}"
            );
            assert!(err.to_string().contains("template"), "{err}");
        }
    }

    #[test]
    fn an_empty_name_is_rejected() {
        assert_eq!(LimitName::new(""), Err(NameError::Empty));
    }

    #[test]
    fn a_name_over_128_characters_is_rejected_with_its_length() {
        let err = LimitName::new(&"x".repeat(129)).unwrap_err();
        assert_eq!(err, NameError::TooLong { len: 129 });
        assert!(err.to_string().contains("129"));
    }

    #[test]
    fn a_bad_character_is_named_with_its_position() {
        for (name, ch, position) in [
            ("a/b", '/', 1),
            ("%", '%', 0),
            ("a&b", '&', 1),
            ("x>", '>', 1),
            ("<", '<', 0),
            ("two words", ' ', 3),
            ("naïve", 'ï', 2),
        ] {
            let err = LimitName::new(name).unwrap_err();
            assert_eq!(
                err,
                NameError::BadChar {
                    name: name.into(),
                    ch,
                    position
                }
            );
            assert!(err.to_string().contains(&format!("{ch:?}")), "{err}");
        }
    }
}
