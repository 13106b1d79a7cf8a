//! Made-up students: the seed for an empty roster and the fallback without a data dir.

use rand::RngExt;
use rand::seq::IndexedRandom;

use crate::student::{Student, days_in};

/// How many students seed an empty roster.
pub const SEED_COUNT: usize = 50;

const FEMALE: [&str; 16] = [
    "Ada",
    "Grace",
    "Hedy",
    "Katherine",
    "Margaret",
    "Radia",
    "Barbara",
    "Frances",
    "Joan",
    "Sophie",
    "Emma",
    "Chloe",
    "Amina",
    "Yuki",
    "Lucia",
    "Ingrid",
];
const MALE: [&str; 16] = [
    "Alan", "Dennis", "Ken", "Linus", "Edsger", "Donald", "John", "Niklaus", "Tim", "Louis",
    "Hugo", "Mateo", "Omar", "Kenji", "Lars", "Pierre",
];
const OTHER: [&str; 6] = ["Alex", "Sam", "Robin", "Charlie", "Kim", "Jo"];
const LAST: [&str; 24] = [
    "Lovelace", "Hopper", "Lamarr", "Johnson", "Hamilton", "Perlman", "Liskov", "Allen", "Clarke",
    "Turing", "Ritchie", "Thompson", "Torvalds", "Dijkstra", "Knuth", "McCarthy", "Wirth",
    "Berners", "Martin", "Bernard", "Dubois", "Garcia", "Tanaka", "Nilsson",
];
const CITIES: [&str; 16] = [
    "Paris",
    "Lyon",
    "Marseille",
    "Toulouse",
    "Lille",
    "Nantes",
    "Bordeaux",
    "Strasbourg",
    "Berlin",
    "Madrid",
    "Lisbon",
    "Dakar",
    "Montreal",
    "Tokyo",
    "Oslo",
    "London",
];

/// A fresh random id: 16 lowercase hex digits, unique across replicas with overwhelming odds.
pub fn new_id() -> String {
    format!("{:016x}", rand::rng().random::<u64>())
}

/// One made-up student with a fresh id.
pub fn student() -> Student {
    let mut rng = rand::rng();
    let (gender, names): (&str, &[&str]) = match rng.random_range(0..10) {
        0 => ("other", &OTHER),
        1..=5 => ("female", &FEMALE),
        _ => ("male", &MALE),
    };
    let first = names.choose(&mut rng).copied().unwrap_or("Alex");
    let last = LAST.choose(&mut rng).copied().unwrap_or("Martin");
    let year = rng.random_range(1995..=2007);
    let month = rng.random_range(1..=12);
    let day = rng.random_range(1..=days_in(year, month));
    Student {
        id: new_id(),
        first_name: first.to_owned(),
        last_name: last.to_owned(),
        gender: gender.to_owned(),
        birthday: format!("{year:04}-{month:02}-{day:02}"),
        email: format!(
            "{}.{}{}@example.edu",
            first.to_lowercase(),
            last.to_lowercase(),
            rng.random_range(1..100)
        ),
        city: CITIES
            .choose(&mut rng)
            .copied()
            .unwrap_or("Paris")
            .to_owned(),
    }
}

/// `n` made-up students.
pub fn students(n: usize) -> Vec<Student> {
    (0..n).map(|_| student()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::student::validate;

    #[test]
    fn generated_students_pass_validation() {
        for s in students(200) {
            let mut body = serde_json::to_value(&s).unwrap();
            let obj = body.as_object_mut().unwrap();
            obj.remove("id");
            assert_eq!(validate(obj, s.id.clone()).unwrap(), s);
        }
    }
}
