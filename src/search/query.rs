//! What a user typed into a search box, taken apart: words (all of them
//! must match), `"quoted phrases"`, `-excluded` words, `or` between
//! alternatives (as Synapse's search), and the operators Hearth reads out
//! of the text for clients that send nothing else:
//!
//! - `from:@alice:example.org`: sent by that user (several: any of them);
//! - `in:#room:example.org` or `in:!roomid`: in that room (several: any);
//! - `before:2026-01-31`, `after:2026-01-01`: sent before that day began, or
//!   on or after it (UTC);
//! - `has:attachment` (a file, image, video or audio), `has:image`,
//!   `has:link` (a web address in the text).
//!
//! Anything else, including an operator with a value it cannot read, is
//! searched for as words.

use ruma::{OwnedUserId, UserId};
use tantivy::tokenizer::TextAnalyzer;

use super::text;

/// Words that match together: one index word, or a phrase of several in a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Words(pub Vec<String>);

/// What `has:` asks for; also the values of a document's `has` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Has {
    /// Content with a `url` (the `contains_url` filter).
    Url,
    Attachment,
    Image,
    Link,
}

impl Has {
    pub fn term(self) -> &'static str {
        match self {
            Has::Url => "url",
            Has::Attachment => "attachment",
            Has::Image => "image",
            Has::Link => "link",
        }
    }
}

#[derive(Debug, Default, PartialEq)]
pub struct Parsed {
    /// Every group must match; a group matches when one of its alternatives does.
    pub groups: Vec<Vec<Words>>,
    /// None of these may match.
    pub excluded: Vec<Words>,
    pub senders: Vec<OwnedUserId>,
    /// `in:` values, aliases or room IDs, for the caller to resolve.
    pub rooms: Vec<String>,
    /// Sent before this time (ms since the epoch).
    pub before: Option<u64>,
    /// Sent at or after this time (ms since the epoch).
    pub after: Option<u64>,
    pub has: Vec<Has>,
}

impl Parsed {
    /// Whether anything at all narrows the search (else it finds nothing).
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
            && self.senders.is_empty()
            && self.rooms.is_empty()
            && self.before.is_none()
            && self.after.is_none()
            && self.has.is_empty()
    }

    /// The index words a hit may match, for highlights.
    pub fn wanted(&self) -> impl Iterator<Item = &String> {
        self.groups.iter().flatten().flat_map(|w| &w.0)
    }
}

/// Splits the text into items: quoted phrases (an unclosed quote runs to
/// the end) and whitespace-separated pieces.
fn items(term: &str) -> Vec<(bool, &str)> {
    let mut out = Vec::new();
    for (i, part) in term.split('"').enumerate() {
        if i % 2 == 1 {
            out.push((true, part));
        } else {
            out.extend(part.split_whitespace().map(|w| (false, w)));
        }
    }
    out
}

pub fn parse(analyzer: &mut TextAnalyzer, term: &str) -> Parsed {
    let mut parsed = Parsed::default();
    let mut join_next = false;
    for (quoted, item) in items(term) {
        if !quoted {
            if item.eq_ignore_ascii_case("or") {
                join_next = !parsed.groups.is_empty();
                continue;
            }
            if item.eq_ignore_ascii_case("and") {
                continue;
            }
            if operator(&mut parsed, item) {
                continue;
            }
            if let Some(rest) = item.strip_prefix('-').filter(|r| !r.is_empty()) {
                let words = text::words(analyzer, rest);
                if !words.is_empty() {
                    parsed.excluded.push(Words(words));
                }
                continue;
            }
        }
        let words = text::words(analyzer, item);
        if words.is_empty() {
            continue;
        }
        match parsed.groups.last_mut() {
            Some(group) if join_next => group.push(Words(words)),
            _ => parsed.groups.push(vec![Words(words)]),
        }
        join_next = false;
    }
    parsed
}

/// Reads one operator into `parsed`; false when `item` is none.
fn operator(parsed: &mut Parsed, item: &str) -> bool {
    let Some((name, value)) = item.split_once(':') else { return false };
    match name.to_ascii_lowercase().as_str() {
        "from" => match UserId::parse(value) {
            Ok(user) => parsed.senders.push(user),
            Err(_) => return false,
        },
        // (Room IDs of version 12 name no server.)
        "in" if value.starts_with('!') || value.starts_with('#') && value.contains(':') => {
            parsed.rooms.push(value.to_owned())
        }
        "before" | "after" => {
            let Some(day) = day_start_ms(value) else { return false };
            if name.eq_ignore_ascii_case("before") {
                parsed.before = Some(parsed.before.map_or(day, |b| b.min(day)));
            } else {
                parsed.after = Some(parsed.after.map_or(day, |a| a.max(day)));
            }
        }
        "has" => parsed.has.push(match value.to_ascii_lowercase().as_str() {
            "attachment" | "file" => Has::Attachment,
            "image" => Has::Image,
            "link" => Has::Link,
            _ => return false,
        }),
        _ => return false,
    }
    true
}

/// Midnight UTC starting `YYYY-MM-DD`, in ms since the epoch.
fn day_start_ms(date: &str) -> Option<u64> {
    let mut parts = date.splitn(3, '-');
    let year: i64 = parts.next()?.parse().ok()?;
    let month: i64 = parts.next()?.parse().ok()?;
    let day: i64 = parts.next()?.parse().ok()?;
    if !(1970..=9999).contains(&year) || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    // Days from the civil date (the proleptic Gregorian calendar), with
    // March as the first month so the leap day ends the year.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    u64::try_from(days * 86_400_000).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_en(term: &str) -> Parsed {
        parse(&mut text::analyzer("english"), term)
    }

    fn words(w: &[&str]) -> Words {
        Words(w.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn words_phrases_alternatives_and_exclusions() {
        let p = parse_en(r#"Cats "big dogs" or birds -mice"#);
        assert_eq!(p.groups, vec![vec![words(&["cat"])], vec![words(&["big", "dog"]), words(&["bird"])]]);
        assert_eq!(p.excluded, vec![words(&["mice"])]);
        // An unclosed quote runs to the end; a leading `or` joins nothing.
        let p = parse_en(r#"or "open quote"#);
        assert_eq!(p.groups, vec![vec![words(&["open", "quot"])]]);
        assert!(parse_en("  , ! ").is_empty());
    }

    #[test]
    fn operators_are_read_out() {
        let p = parse_en(
            "lunch from:@alice:example.org in:#food:example.org after:2026-01-01 before:2026-01-31 has:image has:link",
        );
        assert_eq!(p.groups, vec![vec![words(&["lunch"])]]);
        assert_eq!(p.senders, vec![OwnedUserId::try_from("@alice:example.org").unwrap()]);
        assert_eq!(p.rooms, ["#food:example.org"]);
        assert_eq!(p.after, Some(1_767_225_600_000));
        assert_eq!(p.before, Some(1_769_817_600_000));
        assert_eq!(p.has, [Has::Image, Has::Link]);
        // Values it cannot read are words.
        let p = parse_en("from:nobody before:yesterday has:cheese in:lobby");
        assert_eq!(p.groups.len(), 4);
        assert!(p.senders.is_empty() && p.before.is_none() && p.has.is_empty() && p.rooms.is_empty());
        assert_eq!(day_start_ms("1970-01-01"), Some(0));
        assert_eq!(day_start_ms("2024-03-01"), Some(1_709_251_200_000));
    }
}
