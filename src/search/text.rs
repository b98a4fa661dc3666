//! How text becomes the words the index holds, for documents and queries
//! alike: words are runs of letters, digits and combining marks (any
//! script); Chinese and Japanese characters, written without spaces, are
//! each a word of their own, so text in them is found by its characters.
//! Words are lower-cased, reduced to their stem in the configured language,
//! and folded to ASCII (`Café` and `cafe` are one word).

use std::{
    collections::{BTreeSet, HashSet},
    sync::Arc,
};

use regex::Regex;
use tantivy::tokenizer::{
    AsciiFoldingFilter, Language, LowerCaser, RemoveLongFilter, Stemmer, TextAnalyzer, Token, TokenStream,
    Tokenizer,
};

/// The name the analyzer is registered under in the index.
pub const ANALYZER: &str = "hearth";

/// A word: one Han, hiragana or katakana character, or a run of other
/// letters, digits and marks.
const WORD: &str =
    r"[\p{Han}\p{Hiragana}\p{Katakana}]|[\p{L}\p{N}\p{M}&&[^\p{Han}\p{Hiragana}\p{Katakana}]]+";

/// Longer "words" (base64, hashes) are left out of the index.
const LONGEST_WORD: usize = 64;

fn stemmer(language: &str) -> Option<Language> {
    use Language::*;
    Some(match language {
        "arabic" => Arabic,
        "danish" => Danish,
        "dutch" => Dutch,
        "english" => English,
        "finnish" => Finnish,
        "french" => French,
        "german" => German,
        "greek" => Greek,
        "hungarian" => Hungarian,
        "italian" => Italian,
        "norwegian" => Norwegian,
        "portuguese" => Portuguese,
        "romanian" => Romanian,
        "russian" => Russian,
        "spanish" => Spanish,
        "swedish" => Swedish,
        "tamil" => Tamil,
        "turkish" => Turkish,
        _ => return None,
    })
}

/// The analyzer for `language` (a name `config::SEARCH_LANGUAGES` allows;
/// `none` or any other: no stemming).
pub fn analyzer(language: &str) -> TextAnalyzer {
    let words = Words {
        pattern: Arc::new(Regex::new(WORD).expect("the word pattern is valid")),
        token: Token::default(),
    };
    let base = TextAnalyzer::builder(words).filter(RemoveLongFilter::limit(LONGEST_WORD)).filter(LowerCaser);
    match stemmer(language) {
        // Stemmed before folding: the stemmers know their accents.
        Some(language) => base.filter(Stemmer::new(language)).filter(AsciiFoldingFilter).build(),
        None => base.filter(AsciiFoldingFilter).build(),
    }
}

/// Splits text into [`WORD`]s. (tantivy's `RegexTokenizer` clones its
/// pattern for every text, and a clone starts without the automaton states
/// the pattern has built so far: building them again dominated indexing.
/// The clones of this one share one pattern and so its states.)
#[derive(Clone)]
struct Words {
    pattern: Arc<Regex>,
    token: Token,
}

struct WordStream<'a> {
    matches: regex::Matches<'a, 'a>,
    token: &'a mut Token,
}

impl Tokenizer for Words {
    type TokenStream<'a> = WordStream<'a>;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> WordStream<'a> {
        self.token.reset();
        WordStream { matches: self.pattern.find_iter(text), token: &mut self.token }
    }
}

impl TokenStream for WordStream<'_> {
    fn advance(&mut self) -> bool {
        let Some(word) = self.matches.next() else { return false };
        self.token.text.clear();
        self.token.text.push_str(word.as_str());
        self.token.offset_from = word.start();
        self.token.offset_to = word.end();
        self.token.position = self.token.position.wrapping_add(1);
        true
    }

    fn token(&self) -> &Token {
        self.token
    }

    fn token_mut(&mut self) -> &mut Token {
        self.token
    }
}

/// The index words of `text`, in order.
pub fn words(analyzer: &mut TextAnalyzer, text: &str) -> Vec<String> {
    let mut stream = analyzer.token_stream(text);
    let mut out = Vec::new();
    while stream.advance() {
        out.push(stream.token().text.clone());
    }
    out
}

/// Adds to `out` the words of `text` as written there (`Running`, `CAFÉ`)
/// whose index words are among `wanted`: what a client highlights.
pub fn highlights(
    analyzer: &mut TextAnalyzer,
    text: &str,
    wanted: &HashSet<String>,
    out: &mut BTreeSet<String>,
) {
    let mut stream = analyzer.token_stream(text);
    while stream.advance() {
        let token = stream.token();
        if wanted.contains(&token.text)
            && let Some(surface) = text.get(token.offset_from..token.offset_to)
        {
            out.insert(surface.to_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_folded_stemmed_and_cjk_split() {
        let mut english = analyzer("english");
        assert_eq!(words(&mut english, "Running CAFÉS, naïve!"), ["run", "cafe", "naiv"]);
        assert_eq!(words(&mut english, "東京に行く"), ["東", "京", "に", "行", "く"]);
        assert_eq!(words(&mut english, "서울 여행"), ["서울", "여행"]);
        assert_eq!(words(&mut english, "e-mail 42x"), ["e", "mail", "42x"]);
        let long = "a".repeat(100);
        assert!(words(&mut english, &long).is_empty());
        let mut plain = analyzer("none");
        assert_eq!(words(&mut plain, "Running cafés"), ["running", "cafes"]);
    }

    #[test]
    fn highlights_are_the_written_forms() {
        let mut english = analyzer("english");
        let wanted: HashSet<String> = words(&mut english, "run cafe").into_iter().collect();
        let mut out = BTreeSet::new();
        highlights(&mut english, "Running to the Café, runs", &wanted, &mut out);
        assert_eq!(out.into_iter().collect::<Vec<_>>(), ["Café", "Running", "runs"]);
    }
}
