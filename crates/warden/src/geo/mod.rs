//! Client IP → country, from a MaxMind-format database (GeoLite2/GeoIP2 Country or City,
//! DB-IP, IPinfo's country files: anything with `country.iso_code`).

use std::fmt;
use std::net::IpAddr;
use std::path::Path;

use maxminddb::{path, Reader};

/// An ISO 3166-1 alpha-2 code, upper case; `Copy` so the hot path never allocates for it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Country([u8; 2]);

impl Country {
    pub fn parse(code: &str) -> Option<Country> {
        let bytes = code.as_bytes();
        (bytes.len() == 2 && bytes.iter().all(u8::is_ascii_alphabetic))
            .then(|| Country([bytes[0].to_ascii_uppercase(), bytes[1].to_ascii_uppercase()]))
    }

    pub fn as_str(&self) -> &str {
        // Built only from two ASCII letters.
        std::str::from_utf8(&self.0).unwrap_or("??")
    }
}

impl fmt::Debug for Country {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Country {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

pub struct GeoDb {
    reader: Reader<Vec<u8>>,
}

impl GeoDb {
    /// Reads the whole database into memory (a country database is a few MB).
    pub fn open(path: &Path) -> anyhow::Result<GeoDb> {
        let reader = Reader::open_readfile(path)
            .map_err(|err| anyhow::anyhow!("geo.database {}: {err}", path.display()))?;
        Ok(GeoDb { reader })
    }

    pub fn from_bytes(bytes: Vec<u8>) -> anyhow::Result<GeoDb> {
        Ok(GeoDb {
            reader: Reader::from_source(bytes)?,
        })
    }

    /// The country the address is in, else the one it is registered to; `None` when the
    /// database does not place it (private ranges, gaps, a malformed record).
    pub fn country(&self, ip: IpAddr) -> Option<Country> {
        // A dual-stack listener reports IPv4 clients as `::ffff:a.b.c.d`.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let found = self.reader.lookup(ip).ok()?;
        if !found.has_data() {
            return None;
        }
        let code = |field: &str| {
            found
                .decode_path::<&str>(&path![field, "iso_code"])
                .ok()
                .flatten()
                .and_then(Country::parse)
        };
        code("country").or_else(|| code("registered_country"))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn country_codes_are_two_letters_upper_case() {
        assert_eq!(Country::parse("de").unwrap().as_str(), "DE");
        assert!(Country::parse("DEU").is_none());
        assert!(Country::parse("1A").is_none());
    }
}
