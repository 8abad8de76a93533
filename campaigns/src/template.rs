//! Message templates: text with `{{ name }}` placeholders, checked when the campaign is
//! saved (an unknown name is refused with its position) and rendered with every value
//! escaped for where the text goes — HTML for an e-mail body, a URL component for a link,
//! nothing for plain text (on-site messages are shown as text, never as markup).
//!
//! `{{` opens a placeholder and `}}` closes it. There is no escape for either, so a
//! message's own text cannot contain them: a template means one thing only.

use std::fmt::Write as _;

use crate::expr::Value;

/// Longest template, in characters.
pub const MAX_TEMPLATE_LEN: usize = 10_000;

/// Why a template was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (at character {position})")]
pub struct TemplateError {
    /// `template_syntax`, `unknown_variable` or `too_long`.
    pub code: &'static str,
    pub message: String,
    pub position: usize,
}

/// How values are escaped when rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escape {
    /// Shown as text: nothing to escape.
    Text,
    /// Inside HTML (element content or a quoted attribute).
    Html,
    /// One URL component (a query value, a path segment).
    Url,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Variable(String),
}

/// A checked template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
}

impl Template {
    /// Parses `source`, allowing the variables `known` accepts.
    pub fn parse(source: &str, known: &dyn Fn(&str) -> bool) -> Result<Self, TemplateError> {
        let chars: Vec<char> = source.chars().collect();
        if chars.len() > MAX_TEMPLATE_LEN {
            return Err(TemplateError {
                code: "too_long",
                message: format!("the template is longer than {MAX_TEMPLATE_LEN} characters"),
                position: MAX_TEMPLATE_LEN,
            });
        }
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut i = 0;
        while i < chars.len() {
            if chars[i] == '{' && chars.get(i + 1) == Some(&'{') {
                let open = i;
                let close = (i + 2..chars.len().saturating_sub(1)).find(|&j| chars[j] == '}' && chars[j + 1] == '}');
                let Some(close) = close else {
                    return Err(TemplateError {
                        code: "template_syntax",
                        message: "`{{` is not closed with `}}`".into(),
                        position: open,
                    });
                };
                let inner: String = chars[open + 2..close].iter().collect();
                let name = inner.trim();
                let well_formed = !name.is_empty()
                    && name.split('.').all(|p| {
                        !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                    });
                if !well_formed {
                    return Err(TemplateError {
                        code: "template_syntax",
                        message: format!("`{inner}` is not a variable name"),
                        position: open + 2,
                    });
                }
                if !known(name) {
                    return Err(TemplateError {
                        code: "unknown_variable",
                        message: format!("`{name}` is not a variable a message can use"),
                        position: open + 2 + (inner.chars().count() - inner.trim_start().chars().count()),
                    });
                }
                if !text.is_empty() {
                    parts.push(Part::Text(std::mem::take(&mut text)));
                }
                parts.push(Part::Variable(name.to_owned()));
                i = close + 2;
                continue;
            }
            if chars[i] == '}' && chars.get(i + 1) == Some(&'}') {
                return Err(TemplateError {
                    code: "template_syntax",
                    message: "`}}` closes nothing".into(),
                    position: i,
                });
            }
            text.push(chars[i]);
            i += 1;
        }
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        Ok(Self { source: source.to_owned(), parts })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// The variables the template uses.
    pub fn variables(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Variable(v) => Some(v.as_str()),
            Part::Text(_) => None,
        })
    }

    /// The template with each variable's value escaped by `escape`; the template's own
    /// text is the merchant's and is kept as written.
    pub fn render(&self, value_of: &dyn Fn(&str) -> Value, escape: Escape) -> String {
        let mut out = String::with_capacity(self.source.len());
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Variable(name) => {
                    let value = match value_of(name) {
                        Value::Text(t) => t,
                        Value::Bool(b) => b.to_string(),
                        Value::Number(n) if n.is_finite() && n.fract() == 0.0 && n.abs() < 1e15 => {
                            format!("{n:.0}")
                        }
                        Value::Number(n) if n.is_finite() => format!("{n:.2}"),
                        Value::Number(_) => String::new(),
                    };
                    escape_into(&mut out, &value, escape);
                }
            }
        }
        out
    }
}

fn escape_into(out: &mut String, value: &str, escape: Escape) {
    match escape {
        Escape::Text => out.push_str(value),
        Escape::Html => {
            for c in value.chars() {
                match c {
                    '&' => out.push_str("&amp;"),
                    '<' => out.push_str("&lt;"),
                    '>' => out.push_str("&gt;"),
                    '"' => out.push_str("&quot;"),
                    '\'' => out.push_str("&#39;"),
                    c => out.push(c),
                }
            }
        }
        Escape::Url => {
            for b in value.bytes() {
                if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                    out.push(char::from(b));
                } else {
                    // Writing to a String cannot fail.
                    let _ = write!(out, "%{b:02X}");
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn known(name: &str) -> bool {
        matches!(name, "cart_value" | "cart_items" | "discount.code" | "store.name")
    }

    fn values(name: &str) -> Value {
        match name {
            "cart_value" => Value::Number(80.5),
            "cart_items" => Value::Number(2.0),
            "discount.code" => Value::Text("SAVE 10&<b>\"'".into()),
            _ => Value::Text("Acme & Co".into()),
        }
    }

    #[test]
    fn values_are_escaped_for_where_they_go_and_the_text_is_kept() {
        let t =
            Template::parse("You have {{cart_items}} items ({{ cart_value }}): use {{discount.code}}", &known).unwrap();
        assert_eq!(t.variables().collect::<Vec<_>>(), ["cart_items", "cart_value", "discount.code"]);
        assert_eq!(t.render(&values, Escape::Text), "You have 2 items (80.50): use SAVE 10&<b>\"'");
        assert_eq!(t.render(&values, Escape::Html), "You have 2 items (80.50): use SAVE 10&amp;&lt;b&gt;&quot;&#39;");
        let link = Template::parse("https://shop.example/cart?code={{discount.code}}", &known).unwrap();
        assert_eq!(link.render(&values, Escape::Url), "https://shop.example/cart?code=SAVE%2010%26%3Cb%3E%22%27");
        assert_eq!(Template::parse("<b>Hello</b>", &known).unwrap().render(&values, Escape::Html), "<b>Hello</b>");
    }

    fn refused(source: &str) -> (&'static str, usize) {
        let e = Template::parse(source, &known).unwrap_err();
        (e.code, e.position)
    }

    #[test]
    fn a_bad_template_is_refused_where_it_goes_wrong() {
        assert_eq!(refused("Hi {{ shopper.email }}"), ("unknown_variable", 6));
        assert_eq!(refused("Hi {{cart_value"), ("template_syntax", 3));
        assert_eq!(refused("Hi {{ }}"), ("template_syntax", 5));
        assert_eq!(refused("Hi {{ Cart-Value }}"), ("template_syntax", 5));
        assert_eq!(refused("Hi }} there"), ("template_syntax", 3));
        assert_eq!(refused(&"x".repeat(MAX_TEMPLATE_LEN + 1)), ("too_long", MAX_TEMPLATE_LEN));
        // Positions count characters.
        assert_eq!(refused("Héllo {{ nope }}"), ("unknown_variable", 9));
    }
}
