//! Text from outside made safe for a terminal.
//!
//! Reports come from boards, or from anyone on the LAN who posts as one, and `device list` /
//! `device show` print their strings. Printed raw, an `ESC [` sequence could recolour, clear
//! or retitle the user's terminal, a CR or backspaces could overwrite what is shown with
//! something else, and a bidi override could make text read differently from what it is. Table
//! output goes through [`for_terminal`]; `--json` output stays byte-faithful (JSON escapes the
//! C0 controls itself).

use std::borrow::Cow;
use std::fmt::Write;

/// `s` with every character that steers a terminal or the reading order written out as a
/// visible escape: C0 and C1 controls and DEL (ESC becomes `\x1b`, so an escape sequence is
/// shown, not obeyed), bidi overrides, embeddings, isolates and marks, zero-width characters,
/// and the Unicode line and paragraph separators. Anything else is kept as it is.
pub(crate) fn for_terminal(s: &str) -> Cow<'_, str> {
    if !s.chars().any(unsafe_char) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if !unsafe_char(c) {
            out.push(c);
        } else if (c as u32) < 0x80 {
            let _ = write!(out, "\\x{:02x}", c as u32);
        } else {
            let _ = write!(out, "\\u{{{:04x}}}", c as u32);
        }
    }
    Cow::Owned(out)
}

fn unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}'              // Arabic letter mark
            | '\u{200b}'..='\u{200f}' // zero-width space, joiners, LRM, RLM
            | '\u{2028}'..='\u{202e}' // line/paragraph separators, bidi embeddings, overrides
            | '\u{2060}'..='\u{2069}' // word joiner, invisible operators, bidi isolates
            | '\u{feff}' // zero-width no-break space
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn escapes_what_steers_a_terminal() {
        assert_eq!(
            for_terminal("\x1b[2J\x1b]0;pwned\x07"),
            "\\x1b[2J\\x1b]0;pwned\\x07"
        );
        assert_eq!(for_terminal("ok\rfake"), "ok\\x0dfake");
        assert_eq!(for_terminal("ab\x08\x08cd"), "ab\\x08\\x08cd");
        assert_eq!(for_terminal("a\nb\tc\x7f"), "a\\x0ab\\x09c\\x7f");
        assert_eq!(for_terminal("\u{9b}31m"), "\\u{009b}31m");
        assert_eq!(for_terminal("\u{202e}gnp.exe"), "\\u{202e}gnp.exe");
        assert_eq!(for_terminal("x\u{2066}y\u{2069}"), "x\\u{2066}y\\u{2069}");
        assert_eq!(for_terminal("a\u{200b}b\u{feff}"), "a\\u{200b}b\\u{feff}");
    }

    #[test]
    fn keeps_ordinary_text_as_it_is() {
        for s in [
            "",
            "updated",
            "gen 7 (primary) behind",
            "1.24.1",
            "Ünïcødé ✓ 日本",
            "a\\x1b",
        ] {
            assert!(matches!(for_terminal(s), Cow::Borrowed(_)), "{s}");
        }
    }

    proptest! {
        #[test]
        fn output_has_nothing_that_steers_a_terminal(s in any::<String>()) {
            let out = for_terminal(&s);
            prop_assert!(!out.chars().any(unsafe_char), "{out:?}");
            // Nothing is dropped: safe input comes back as it was.
            if !s.chars().any(unsafe_char) {
                prop_assert_eq!(out.as_ref(), s.as_str());
            }
        }

        #[test]
        fn every_control_character_is_escaped(c in any::<char>().prop_filter("control", |c| c.is_control())) {
            let out = for_terminal(&c.to_string()).into_owned();
            prop_assert!(out.starts_with('\\') && out.is_ascii(), "{out:?}");
        }
    }
}
