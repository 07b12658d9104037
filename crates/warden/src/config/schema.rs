//! Declares a config section once and gets a reader that reports every unknown key and
//! wrong type with its path, instead of serde's first error only.

/// `section! { pub struct Name { field: Type, ... } }` defines a struct of `Option` fields
/// and `Name::read(value, path, problems)`.
macro_rules! section {
    ($(#[$meta:meta])* pub struct $name:ident { $( $field:ident : $ty:ty ),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Default)]
        pub struct $name {
            $( pub $field: Option<$ty>, )*
        }

        impl $name {
            pub const FIELDS: &'static [&'static str] = &[$(stringify!($field)),*];

            pub fn read(
                value: &toml::Value,
                path: &str,
                problems: &mut $crate::config::problems::Problems,
            ) -> Self {
                #[allow(unused_mut, reason = "a section with no fields never assigns")]
                let mut out = Self::default();
                let Some(table) = value.as_table() else {
                    problems.push(path, format!("expected a table, got {}", value.type_str()));
                    return out;
                };
                for (key, item) in table {
                    let key_path = format!("{path}.{key}");
                    match key.as_str() {
                        $( stringify!($field) => match item.clone().try_into::<$ty>() {
                            Ok(parsed) => out.$field = Some(parsed),
                            Err(err) => problems.push(
                                key_path,
                                $crate::config::schema::type_problem(&err.to_string(), item),
                            ),
                        }, )*
                        _ => problems.push(
                            key_path,
                            $crate::config::schema::unknown("key", key, Self::FIELDS),
                        ),
                    }
                }
                out
            }
        }
    };
}

pub(crate) use section;

/// "unknown key": with the likely intended name when one is close (a typo, a case
/// slip), else the list of known names.
pub fn unknown(what: &str, name: &str, known: &[&str]) -> String {
    let lower = name.to_ascii_lowercase();
    let closest = known
        .iter()
        .map(|k| (strsim::levenshtein(&lower, k), *k))
        .min();
    match closest {
        Some((distance, k)) if distance <= (name.len() / 3).max(2) => {
            format!("unknown {what}; did you mean '{k}'?")
        }
        _ => format!("unknown {what} (known {what}s: {})", known.join(", ")),
    }
}

/// serde's message trimmed to one line, naming what was found.
pub fn type_problem(serde_message: &str, found: &toml::Value) -> String {
    let first = serde_message.lines().next().unwrap_or(serde_message).trim();
    format!("{first} (found {})", found.type_str())
}
