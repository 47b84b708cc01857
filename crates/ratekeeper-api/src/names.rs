//! What names, ids and numbers look like on the wire: the patterns the
//! API description states (the rules themselves live in the engine), whole
//! numbers that may be written `3.0`, and limit names in URL paths.

/// What a limit name looks like (`.` and `..` are refused besides).
pub const NAME_PATTERN: &str = r"^(?:[A-Za-z0-9._:-]{1,128}|[A-Za-z0-9._:-]{1,127}\*)$";
/// What a lease id and a ticket look like.
pub const ID_PATTERN: &str = "^[0-9a-f]{32}$";

/// The longest duration a request may name, in seconds (about 31 700
/// years): anything longer is a mistake, and would not fit a clock.
pub const MAX_SECONDS: f64 = 1e12;

/// The schema of a limit name, in bodies and paths: 1–128 characters of
/// `A-Z a-z 0-9 . _ - :`, other than `.` and `..` (the rule itself lives in
/// the engine).
#[cfg(feature = "openapi")]
pub struct LimitName;

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for LimitName {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        id_like(
            NAME_PATTERN,
            "a limit name, other than `.` and `..`; one ending in `*` is a template",
        )
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for LimitName {}

/// The schema of a lease id or a ticket, in paths.
#[cfg(feature = "openapi")]
pub struct LeaseIdText;

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for LeaseIdText {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        id_like(ID_PATTERN, "32 lowercase hexadecimal digits")
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for LeaseIdText {}

#[cfg(feature = "openapi")]
fn id_like(
    pattern: &str,
    description: &str,
) -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(pattern))
        .description(Some(description))
        .into()
}

/// Reads a whole number of at least 0, also written with a zero fraction
/// (`3.0`), as JSON Schema's `integer` allows; anything else is refused
/// in words a person reads.
struct Whole;

impl serde::de::Visitor<'_> for Whole {
    type Value = u64;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a whole number, 0 or more")
    }

    fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<u64, E> {
        Ok(n)
    }

    fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<u64, E> {
        u64::try_from(n).map_err(|_| E::invalid_value(serde::de::Unexpected::Signed(n), &self))
    }

    fn visit_f64<E: serde::de::Error>(self, n: f64) -> Result<u64, E> {
        // 2^64 is the first float past u64::MAX.
        if n >= 0.0 && n.fract() == 0.0 && n < 18_446_744_073_709_551_616.0 {
            Ok(n as u64)
        } else {
            Err(E::invalid_value(serde::de::Unexpected::Float(n), &self))
        }
    }
}

pub(crate) fn whole<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    d.deserialize_any(Whole)
}

pub(crate) fn whole_or_null<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<u64>, D::Error> {
    struct OrNull;
    impl<'de> serde::de::Visitor<'de> for OrNull {
        type Value = Option<u64>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a whole number, 0 or more, or null")
        }

        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            whole(d).map(Some)
        }
    }
    d.deserialize_option(OrNull)
}

/// A limit name as a URL path segment or query value. Names are checked
/// by the server; anything outside the allowed characters is
/// percent-encoded, so that it reaches the server intact and is refused
/// with a clear message rather than read as another path.
pub fn encoded_name(name: &str) -> String {
    name.bytes()
        .map(|byte| {
            if byte.is_ascii_alphanumeric() || b"._-:".contains(&byte) {
                char::from(byte).to_string()
            } else {
                format!("%{byte:02X}")
            }
        })
        .collect()
}

/// The path of a limit: `/v1/limits/{name}`, the name encoded.
pub fn limit_path(name: &str) -> String {
    format!("/v1/limits/{}", encoded_name(name))
}
