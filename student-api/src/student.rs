//! The student record, and validation of a submitted one.
//!
//! Validation works on a loose JSON object rather than a typed struct so that one 422 can
//! list every bad field at once (serde would stop at the first).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One stored student: a line of the roster file and an element of the API's array.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Student {
    /// Unique id, 16 lowercase hex digits (random, so replicas never collide).
    pub id: String,
    /// Given name.
    pub first_name: String,
    /// Family name.
    pub last_name: String,
    /// One of [`GENDERS`].
    pub gender: String,
    /// Date of birth, `YYYY-MM-DD`.
    pub birthday: String,
    /// Email address.
    pub email: String,
    /// Home city.
    pub city: String,
}

/// Accepted values of `gender`.
pub const GENDERS: [&str; 3] = ["female", "male", "other"];

/// Field name -> message, for a 422 body.
pub type FieldErrors = BTreeMap<String, String>;

/// Fields a client may send; `id` is assigned by the server.
const FIELDS: [&str; 6] = [
    "firstName",
    "lastName",
    "gender",
    "birthday",
    "email",
    "city",
];

/// Validates a submitted JSON object into a student with the given id.
pub fn validate(body: &Map<String, Value>, id: String) -> Result<Student, FieldErrors> {
    let mut errors = FieldErrors::new();
    for key in body.keys().filter(|k| !FIELDS.contains(&k.as_str())) {
        let msg = if key == "id" {
            "is assigned by the server"
        } else {
            "unknown field"
        };
        errors.insert(key.clone(), msg.to_owned());
    }
    let mut text = |name: &str, max: usize, check: fn(&str) -> Option<&'static str>| {
        let msg = match body.get(name) {
            None | Some(Value::Null) => Some("is required".to_owned()),
            Some(Value::String(s)) if s.trim().is_empty() => Some("is required".to_owned()),
            Some(Value::String(s)) if s.trim().chars().count() > max => {
                Some(format!("must be at most {max} characters"))
            }
            Some(Value::String(s)) => check(s.trim()).map(str::to_owned),
            Some(_) => Some("must be a string".to_owned()),
        };
        match msg {
            Some(m) => {
                errors.insert(name.to_owned(), m);
                String::new()
            }
            None => body
                .get(name)
                .and_then(Value::as_str)
                .map(|s| s.trim().to_owned())
                .unwrap_or_default(),
        }
    };
    let student = Student {
        id,
        first_name: text("firstName", 50, check_name),
        last_name: text("lastName", 50, check_name),
        gender: text("gender", 10, check_gender),
        birthday: text("birthday", 10, check_birthday),
        email: text("email", 254, check_email),
        city: text("city", 80, check_name),
    };
    if errors.is_empty() {
        Ok(student)
    } else {
        Err(errors)
    }
}

fn check_name(s: &str) -> Option<&'static str> {
    s.chars()
        .any(char::is_control)
        .then_some("must not contain control characters")
}

fn check_gender(s: &str) -> Option<&'static str> {
    (!GENDERS.contains(&s)).then_some("must be one of female, male, other")
}

fn check_email(s: &str) -> Option<&'static str> {
    const MSG: &str = "must be a valid email address";
    let Some((local, domain)) = s.split_once('@') else {
        return Some(MSG);
    };
    let ok = !local.is_empty()
        && !domain.contains('@')
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
        && domain.contains('.')
        && domain.split('.').all(|label| !label.is_empty());
    (!ok).then_some(MSG)
}

fn check_birthday(s: &str) -> Option<&'static str> {
    const MSG: &str = "must be a date YYYY-MM-DD between 1900-01-01 and 2030-12-31";
    let parts: Vec<&str> = s.split('-').collect();
    let [y, m, d] = parts.as_slice() else {
        return Some(MSG);
    };
    let digits = |p: &str, n: usize| p.len() == n && p.bytes().all(|b| b.is_ascii_digit());
    if !(digits(y, 4) && digits(m, 2) && digits(d, 2)) {
        return Some(MSG);
    }
    let (Ok(y), Ok(m), Ok(d)) = (y.parse::<u32>(), m.parse::<u32>(), d.parse::<u32>()) else {
        return Some(MSG);
    };
    let ok = (1900..=2030).contains(&y) && (1..=12).contains(&m) && d >= 1 && d <= days_in(y, m);
    (!ok).then_some(MSG)
}

/// Days in month `m` (1-based) of year `y`, Gregorian.
pub fn days_in(y: u32, m: u32) -> u32 {
    match m {
        4 | 6 | 9 | 11 => 30,
        2 if (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400) => 29,
        2 => 28,
        _ => 31,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn a_complete_student_validates_and_is_trimmed() {
        let body = obj(
            json!({"firstName": " Ada ", "lastName": "Lovelace", "gender": "female",
            "birthday": "1900-02-28", "email": "ada@example.org", "city": "London"}),
        );
        let s = validate(&body, "00ff".into()).unwrap();
        assert_eq!(s.first_name, "Ada");
        assert_eq!(s.id, "00ff");
    }

    #[test]
    fn every_bad_field_is_listed() {
        let body = obj(json!({"firstName": "", "lastName": 3, "gender": "x",
            "birthday": "2001-02-29", "email": "a@b", "id": "1", "extra": true}));
        let e = validate(&body, String::new()).unwrap_err();
        for f in [
            "firstName",
            "lastName",
            "gender",
            "birthday",
            "email",
            "city",
            "id",
            "extra",
        ] {
            assert!(e.contains_key(f), "missing {f}: {e:?}");
        }
        assert_eq!(e["email"], "must be a valid email address");
    }

    #[test]
    fn leap_days_follow_the_gregorian_rules() {
        assert!(check_birthday("2000-02-29").is_none());
        assert!(check_birthday("1900-02-29").is_some());
        assert!(check_birthday("2004-02-29").is_none());
        assert!(check_birthday("2004-13-01").is_some());
    }
}
