//! The parser: characters to tokens to an [`Expr`] tree, with the length and depth limits
//! checked on the way.

use super::{BinOp, Expr, ExprError, Kind, MAX_DEPTH, MAX_LEN};

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Number(f64),
    Text(String),
    Word(String),
    Symbol(&'static str),
    End,
}

impl Token {
    fn describe(&self) -> String {
        match self {
            Self::Number(n) => format!("the number {n}"),
            Self::Text(_) => "a text".to_owned(),
            Self::Word(w) => format!("`{w}`"),
            Self::Symbol(s) => format!("`{s}`"),
            Self::End => "the end".to_owned(),
        }
    }
}

const KEYWORDS: [&str; 6] = ["and", "or", "not", "in", "true", "false"];

/// Splits the source into tokens with their character positions.
fn lex(source: &str) -> Result<Vec<(Token, usize)>, ExprError> {
    let chars: Vec<char> = source.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let start = i;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if c.is_ascii_digit() {
            while i < chars.len() && chars[i].is_ascii_digit() {
                i += 1;
            }
            if i < chars.len() && chars[i] == '.' {
                i += 1;
                let fraction = i;
                while i < chars.len() && chars[i].is_ascii_digit() {
                    i += 1;
                }
                if i == fraction {
                    return Err(ExprError::new("syntax_error", i, "a digit must follow the decimal point"));
                }
            }
            let text: String = chars[start..i].iter().collect();
            let n: f64 = text.parse().map_err(|_| ExprError::new("syntax_error", start, "not a number"))?;
            if !n.is_finite() {
                return Err(ExprError::new("syntax_error", start, "the number is too large"));
            }
            tokens.push((Token::Number(n), start));
            continue;
        }
        if c.is_ascii_alphabetic() || c == '_' {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            tokens.push((Token::Word(chars[start..i].iter().collect()), start));
            continue;
        }
        if c == '"' {
            i += 1;
            let mut text = String::new();
            loop {
                match chars.get(i) {
                    None => return Err(ExprError::new("syntax_error", start, "the text is not closed with `\"`")),
                    Some('"') => {
                        i += 1;
                        break;
                    }
                    Some('\\') => match chars.get(i + 1) {
                        Some(&escaped @ ('"' | '\\')) => {
                            text.push(escaped);
                            i += 2;
                        }
                        _ => return Err(ExprError::new("syntax_error", i, "only `\\\"` and `\\\\` are escapes")),
                    },
                    Some(c) if c.is_control() => {
                        return Err(ExprError::new("syntax_error", i, "a text cannot hold control characters"));
                    }
                    Some(c) => {
                        text.push(*c);
                        i += 1;
                    }
                }
            }
            tokens.push((Token::Text(text), start));
            continue;
        }
        let two: String = chars[i..chars.len().min(i + 2)].iter().collect();
        let symbol = match two.as_str() {
            "==" => Some("=="),
            "!=" => Some("!="),
            "<=" => Some("<="),
            ">=" => Some(">="),
            _ => None,
        };
        if let Some(symbol) = symbol {
            tokens.push((Token::Symbol(symbol), start));
            i += 2;
            continue;
        }
        let symbol = match c {
            '<' => "<",
            '>' => ">",
            '+' => "+",
            '-' => "-",
            '*' => "*",
            '/' => "/",
            '(' => "(",
            ')' => ")",
            '[' => "[",
            ']' => "]",
            ',' => ",",
            '.' => ".",
            '=' => return Err(ExprError::new("syntax_error", start, "`=` is not an operator: compare with `==`")),
            '&' | '|' | '!' => {
                return Err(ExprError::new("syntax_error", start, "use `and`, `or` and `not`"));
            }
            other => return Err(ExprError::new("syntax_error", start, format!("`{other}` is not allowed here"))),
        };
        tokens.push((Token::Symbol(symbol), start));
        i += 1;
    }
    tokens.push((Token::End, chars.len()));
    Ok(tokens)
}

struct Parser {
    tokens: Vec<(Token, usize)>,
    at: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> &Token {
        &self.tokens[self.at.min(self.tokens.len() - 1)].0
    }

    fn position(&self) -> usize {
        self.tokens[self.at.min(self.tokens.len() - 1)].1
    }

    fn advance(&mut self) -> (Token, usize) {
        let token = self.tokens[self.at.min(self.tokens.len() - 1)].clone();
        if self.at < self.tokens.len() - 1 {
            self.at += 1;
        }
        token
    }

    fn is_symbol(&self, symbol: &str) -> bool {
        matches!(self.peek(), Token::Symbol(s) if *s == symbol)
    }

    fn is_word(&self, word: &str) -> bool {
        matches!(self.peek(), Token::Word(w) if w == word)
    }

    fn expect_symbol(&mut self, symbol: &'static str) -> Result<(), ExprError> {
        if self.is_symbol(symbol) {
            self.advance();
            Ok(())
        } else {
            Err(self.unexpected(&format!("`{symbol}`")))
        }
    }

    fn unexpected(&self, wanted: &str) -> ExprError {
        ExprError::new("syntax_error", self.position(), format!("expected {wanted}, found {}", self.peek().describe()))
    }

    /// Enters one level of nesting.
    fn deeper(&mut self) -> Result<(), ExprError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(ExprError::new(
                "too_deep",
                self.position(),
                format!("the condition nests deeper than {MAX_DEPTH} levels"),
            ));
        }
        Ok(())
    }

    fn binary(
        &mut self,
        ops: &[(&str, BinOp)],
        next: fn(&mut Self) -> Result<Expr, ExprError>,
    ) -> Result<Expr, ExprError> {
        let mut left = next(self)?;
        let entered = self.depth;
        loop {
            let op = ops.iter().find(|(text, _)| self.is_symbol(text) || self.is_word(text)).map(|(_, op)| *op);
            let Some(op) = op else {
                self.depth = entered;
                return Ok(left);
            };
            let (_, position) = self.advance();
            // Each operator of a chain makes the tree one level deeper.
            self.deeper()?;
            let right = next(self)?;
            left = Expr { position, kind: Kind::Binary(op, Box::new(left), Box::new(right)) };
        }
    }

    fn or(&mut self) -> Result<Expr, ExprError> {
        self.binary(&[("or", BinOp::Or)], Self::and)
    }

    fn and(&mut self) -> Result<Expr, ExprError> {
        self.binary(&[("and", BinOp::And)], Self::not)
    }

    fn not(&mut self) -> Result<Expr, ExprError> {
        if self.is_word("not") {
            let (_, position) = self.advance();
            self.deeper()?;
            let operand = self.not()?;
            self.depth -= 1;
            return Ok(Expr { position, kind: Kind::Not(Box::new(operand)) });
        }
        self.compare()
    }

    fn compare(&mut self) -> Result<Expr, ExprError> {
        const COMPARISONS: [(&str, BinOp); 6] = [
            ("==", BinOp::Eq),
            ("!=", BinOp::Ne),
            ("<=", BinOp::Le),
            (">=", BinOp::Ge),
            ("<", BinOp::Lt),
            (">", BinOp::Gt),
        ];
        let left = self.sum()?;
        let compared = if let Some((_, op)) = COMPARISONS.iter().find(|(s, _)| self.is_symbol(s)) {
            let (_, position) = self.advance();
            let right = self.sum()?;
            Expr { position, kind: Kind::Binary(*op, Box::new(left), Box::new(right)) }
        } else if self.is_word("in") {
            let (_, position) = self.advance();
            self.expect_symbol("[")?;
            let mut list = vec![self.literal()?];
            while self.is_symbol(",") {
                self.advance();
                list.push(self.literal()?);
            }
            self.expect_symbol("]")?;
            Expr { position, kind: Kind::In(Box::new(left), list) }
        } else {
            return Ok(left);
        };
        if COMPARISONS.iter().any(|(s, _)| self.is_symbol(s)) || self.is_word("in") {
            return Err(ExprError::new(
                "syntax_error",
                self.position(),
                "comparisons do not chain: join them with `and`",
            ));
        }
        Ok(compared)
    }

    fn literal(&mut self) -> Result<Expr, ExprError> {
        let position = self.position();
        let kind = match self.peek().clone() {
            Token::Number(n) => Kind::Number(n),
            Token::Text(t) => Kind::Text(t),
            Token::Word(w) if w == "true" => Kind::Bool(true),
            Token::Word(w) if w == "false" => Kind::Bool(false),
            _ => return Err(self.unexpected("a number, a text, `true` or `false`")),
        };
        self.advance();
        Ok(Expr { position, kind })
    }

    fn sum(&mut self) -> Result<Expr, ExprError> {
        self.binary(&[("+", BinOp::Add), ("-", BinOp::Sub)], Self::product)
    }

    fn product(&mut self) -> Result<Expr, ExprError> {
        self.binary(&[("*", BinOp::Mul), ("/", BinOp::Div)], Self::unary)
    }

    fn unary(&mut self) -> Result<Expr, ExprError> {
        if self.is_symbol("-") {
            let (_, position) = self.advance();
            self.deeper()?;
            let operand = self.unary()?;
            self.depth -= 1;
            return Ok(Expr { position, kind: Kind::Neg(Box::new(operand)) });
        }
        self.atom()
    }

    fn atom(&mut self) -> Result<Expr, ExprError> {
        let position = self.position();
        match self.peek().clone() {
            Token::Number(_) | Token::Text(_) => self.literal(),
            Token::Word(w) if w == "true" || w == "false" => self.literal(),
            Token::Word(w) if KEYWORDS.contains(&w.as_str()) => Err(self.unexpected("a value")),
            Token::Word(w) => {
                self.advance();
                let mut name = w;
                while self.is_symbol(".") {
                    self.advance();
                    match self.advance() {
                        (Token::Word(part), _) if !KEYWORDS.contains(&part.as_str()) => {
                            name.push('.');
                            name.push_str(&part);
                        }
                        (token, at) => {
                            return Err(ExprError::new(
                                "syntax_error",
                                at,
                                format!("expected a name after `.`, found {}", token.describe()),
                            ));
                        }
                    }
                }
                Ok(Expr { position, kind: Kind::Name(name) })
            }
            Token::Symbol("(") => {
                self.advance();
                self.deeper()?;
                let inner = self.or()?;
                self.depth -= 1;
                self.expect_symbol(")")?;
                Ok(inner)
            }
            _ => Err(self.unexpected("a value")),
        }
    }
}

/// Parses `source` without checking names or types.
pub fn parse(source: &str) -> Result<Expr, ExprError> {
    let length = source.chars().count();
    if length > MAX_LEN {
        return Err(ExprError::new("too_long", MAX_LEN, format!("the condition is longer than {MAX_LEN} characters")));
    }
    let mut parser = Parser { tokens: lex(source)?, at: 0, depth: 0 };
    if matches!(parser.peek(), Token::End) {
        return Err(ExprError::new("syntax_error", 0, "the condition is empty"));
    }
    let expr = parser.or()?;
    if !matches!(parser.peek(), Token::End) {
        return Err(parser.unexpected("an operator or the end"));
    }
    // The parser bounds its own recursion; the tree's height is checked here, so what is
    // accepted prints back to something accepted.
    if let Some(position) = deeper_than(&expr, MAX_DEPTH) {
        return Err(ExprError::new(
            "too_deep",
            position,
            format!("the condition nests deeper than {MAX_DEPTH} levels"),
        ));
    }
    Ok(expr)
}

/// Where `expr` goes deeper than `levels` operators, if it does.
fn deeper_than(expr: &Expr, levels: usize) -> Option<usize> {
    let children: Vec<&Expr> = match &expr.kind {
        Kind::Number(_) | Kind::Text(_) | Kind::Bool(_) | Kind::Name(_) => return None,
        Kind::Not(e) | Kind::Neg(e) => vec![e],
        Kind::Binary(_, l, r) => vec![l, r],
        Kind::In(v, list) => std::iter::once(&**v).chain(list.iter()).collect(),
    };
    if levels == 0 {
        return Some(expr.position);
    }
    children.into_iter().find_map(|c| deeper_than(c, levels - 1))
}
