//! The condition language of campaigns: small, typed, declarative, never code.
//!
//! A merchant writes when a campaign applies, for example
//! `cart_value >= 50 and prediction.abandonment > 0.7 and not checkout_started`.
//!
//! ```text
//! condition := or
//! or        := and ("or" and)*
//! and       := not ("and" not)*
//! not       := "not" not | compare
//! compare   := sum [("==" | "!=" | "<" | "<=" | ">" | ">=") sum]
//!            | sum "in" "[" literal ("," literal)* "]"
//! sum       := product (("+" | "-") product)*
//! product   := unary (("*" | "/") unary)*
//! unary     := "-" unary | atom
//! atom      := number | "text" | true | false | name ("." name)* | "(" or ")"
//! ```
//!
//! Values are numbers, booleans or text; a name's type comes from a [`Schema`] (the cell's
//! features and predictions), and [`Condition::parse`] refuses an unknown name, an operator
//! applied to the wrong type, or a condition that is not a boolean, each with the character
//! position it found the problem at. Comparisons do not chain (`a < b < c` is an error).
//! A result that is not a finite number (a division by zero, an overflow) is not a number:
//! every comparison with it is false, `!=` included.
//! Conditions are at most [`MAX_LEN`] characters and nest at most [`MAX_DEPTH`] deep, so no
//! input can exhaust the parser. [`Condition`] prints in a canonical form that parses back
//! to the same condition.

mod parse;

use std::fmt;

pub use self::parse::parse;

/// Longest condition, in characters.
pub const MAX_LEN: usize = 2_000;
/// Deepest nesting of operators and parentheses (each operator of a chain such as
/// `a and b and c` counts: the tree it makes is that deep).
pub const MAX_DEPTH: usize = 64;

/// A value's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    Number,
    Bool,
    Text,
}

impl Type {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Number => "number",
            Self::Bool => "boolean",
            Self::Text => "text",
        }
    }
}

/// A value a name has when a condition is evaluated.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Number(f64),
    Bool(bool),
    Text(String),
}

/// The names a condition may use, and their types.
pub trait Schema {
    fn type_of(&self, name: &str) -> Option<Type>;
}

/// The values of the names, at one moment. A name without a value (a feature the shopper
/// has none of yet) takes the value the implementation defaults it to.
pub trait Values {
    fn value_of(&self, name: &str) -> Value;
}

/// Why a condition was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (at character {position})")]
pub struct ExprError {
    /// `syntax_error`, `unknown_name`, `type_mismatch`, `too_long` or `too_deep`.
    pub code: &'static str,
    pub message: String,
    /// Characters from the start of the condition (0-based) where the problem is.
    pub position: usize,
}

impl ExprError {
    fn new(code: &'static str, position: usize, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), position }
    }
}

/// A binary operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    Or,
    And,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Add,
    Sub,
    Mul,
    Div,
}

impl BinOp {
    fn symbol(self) -> &'static str {
        match self {
            Self::Or => "or",
            Self::And => "and",
            Self::Eq => "==",
            Self::Ne => "!=",
            Self::Lt => "<",
            Self::Le => "<=",
            Self::Gt => ">",
            Self::Ge => ">=",
            Self::Add => "+",
            Self::Sub => "-",
            Self::Mul => "*",
            Self::Div => "/",
        }
    }

    fn precedence(self) -> u8 {
        match self {
            Self::Or => 1,
            Self::And => 2,
            Self::Eq | Self::Ne | Self::Lt | Self::Le | Self::Gt | Self::Ge => 4,
            Self::Add | Self::Sub => 5,
            Self::Mul | Self::Div => 6,
        }
    }
}

const NOT_PRECEDENCE: u8 = 3;
const COMPARE_PRECEDENCE: u8 = 4;
const NEG_PRECEDENCE: u8 = 7;
const ATOM_PRECEDENCE: u8 = 8;

/// A parsed expression. Its position is where it was read; equality ignores it.
#[derive(Debug, Clone)]
pub struct Expr {
    pub position: usize,
    pub kind: Kind,
}

impl PartialEq for Expr {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// Finite and not negative (a minus sign is [`Kind::Neg`]).
    Number(f64),
    Text(String),
    Bool(bool),
    /// A dotted name: `cart_value`, `prediction.abandonment`.
    Name(String),
    Not(Box<Expr>),
    Neg(Box<Expr>),
    Binary(BinOp, Box<Expr>, Box<Expr>),
    /// The value is one of the literals.
    In(Box<Expr>, Vec<Expr>),
}

impl Expr {
    fn precedence(&self) -> u8 {
        match &self.kind {
            Kind::Binary(op, ..) => op.precedence(),
            Kind::In(..) => COMPARE_PRECEDENCE,
            Kind::Not(_) => NOT_PRECEDENCE,
            Kind::Neg(_) => NEG_PRECEDENCE,
            _ => ATOM_PRECEDENCE,
        }
    }
}

fn write_child(f: &mut fmt::Formatter<'_>, child: &Expr, at_least: u8) -> fmt::Result {
    if child.precedence() < at_least { write!(f, "({child})") } else { write!(f, "{child}") }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Number(n) => write!(f, "{n}"),
            Kind::Text(t) => {
                f.write_str("\"")?;
                for c in t.chars() {
                    match c {
                        '"' => f.write_str("\\\"")?,
                        '\\' => f.write_str("\\\\")?,
                        c => write!(f, "{c}")?,
                    }
                }
                f.write_str("\"")
            }
            Kind::Bool(b) => write!(f, "{b}"),
            Kind::Name(n) => f.write_str(n),
            Kind::Not(e) => {
                f.write_str("not ")?;
                write_child(f, e, NOT_PRECEDENCE)
            }
            Kind::Neg(e) => {
                f.write_str("-")?;
                write_child(f, e, NEG_PRECEDENCE)
            }
            Kind::Binary(op, left, right) => {
                let p = op.precedence();
                // Left-associative: the right side binds tighter, so the tree prints back
                // as itself. Comparisons do not chain: both sides bind tighter.
                let left_at_least = if p == COMPARE_PRECEDENCE { p + 1 } else { p };
                write_child(f, left, left_at_least)?;
                write!(f, " {} ", op.symbol())?;
                write_child(f, right, p + 1)
            }
            Kind::In(value, list) => {
                write_child(f, value, COMPARE_PRECEDENCE + 1)?;
                f.write_str(" in [")?;
                for (i, item) in list.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_str("]")
            }
        }
    }
}

/// The type of `expr`, given the names' types.
pub fn type_of(expr: &Expr, schema: &dyn Schema) -> Result<Type, ExprError> {
    let mismatch = |at: usize, message: String| ExprError::new("type_mismatch", at, message);
    let want = |e: &Expr, wanted: Type, what: &str| -> Result<(), ExprError> {
        let got = type_of(e, schema)?;
        if got == wanted {
            Ok(())
        } else {
            Err(mismatch(e.position, format!("{what} needs a {}, not a {}", wanted.as_str(), got.as_str())))
        }
    };
    Ok(match &expr.kind {
        Kind::Number(_) => Type::Number,
        Kind::Text(_) => Type::Text,
        Kind::Bool(_) => Type::Bool,
        Kind::Name(name) => schema.type_of(name).ok_or_else(|| {
            ExprError::new("unknown_name", expr.position, format!("`{name}` is not a feature or prediction"))
        })?,
        Kind::Not(e) => {
            want(e, Type::Bool, "`not`")?;
            Type::Bool
        }
        Kind::Neg(e) => {
            want(e, Type::Number, "`-`")?;
            Type::Number
        }
        Kind::Binary(op, left, right) => match op {
            BinOp::Or | BinOp::And => {
                want(left, Type::Bool, &format!("`{}`", op.symbol()))?;
                want(right, Type::Bool, &format!("`{}`", op.symbol()))?;
                Type::Bool
            }
            BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div => {
                want(left, Type::Number, &format!("`{}`", op.symbol()))?;
                want(right, Type::Number, &format!("`{}`", op.symbol()))?;
                Type::Number
            }
            BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => {
                want(left, Type::Number, &format!("`{}`", op.symbol()))?;
                want(right, Type::Number, &format!("`{}`", op.symbol()))?;
                Type::Bool
            }
            BinOp::Eq | BinOp::Ne => {
                let t = type_of(left, schema)?;
                want(right, t, &format!("`{}` with a {} on its left", op.symbol(), t.as_str()))?;
                Type::Bool
            }
        },
        Kind::In(value, list) => {
            let t = type_of(value, schema)?;
            for item in list {
                want(item, t, &format!("`in` with a {} on its left", t.as_str()))?;
            }
            Type::Bool
        }
    })
}

fn number(v: Value) -> f64 {
    match v {
        Value::Number(n) => n,
        Value::Bool(b) => f64::from(u8::from(b)),
        Value::Text(_) => f64::NAN,
    }
}

fn truth(v: Value) -> bool {
    matches!(v, Value::Bool(true))
}

/// The value of a type-checked `expr`.
pub fn evaluate(expr: &Expr, values: &dyn Values) -> Value {
    match &expr.kind {
        Kind::Number(n) => Value::Number(*n),
        Kind::Text(t) => Value::Text(t.clone()),
        Kind::Bool(b) => Value::Bool(*b),
        Kind::Name(name) => values.value_of(name),
        Kind::Not(e) => Value::Bool(!truth(evaluate(e, values))),
        Kind::Neg(e) => Value::Number(-number(evaluate(e, values))),
        Kind::Binary(op, left, right) => {
            let l = evaluate(left, values);
            match op {
                // Short-circuit: the right side is not evaluated when the left decides.
                BinOp::Or => Value::Bool(truth(l) || truth(evaluate(right, values))),
                BinOp::And => Value::Bool(truth(l) && truth(evaluate(right, values))),
                BinOp::Eq => Value::Bool(equal(&l, &evaluate(right, values))),
                BinOp::Ne => {
                    let r = evaluate(right, values);
                    Value::Bool(!is_nan(&l) && !is_nan(&r) && !equal(&l, &r))
                }
                _ => {
                    let (a, b) = (number(l), number(evaluate(right, values)));
                    let finite = |n: f64| Value::Number(if n.is_finite() { n } else { f64::NAN });
                    match op {
                        BinOp::Lt => Value::Bool(a < b),
                        BinOp::Le => Value::Bool(a <= b),
                        BinOp::Gt => Value::Bool(a > b),
                        BinOp::Ge => Value::Bool(a >= b),
                        BinOp::Add => finite(a + b),
                        BinOp::Sub => finite(a - b),
                        BinOp::Mul => finite(a * b),
                        // Not a number, rather than an infinity that would compare.
                        _ => finite(a / b),
                    }
                }
            }
        }
        Kind::In(value, list) => {
            let v = evaluate(value, values);
            Value::Bool(list.iter().any(|item| equal(&v, &evaluate(item, values))))
        }
    }
}

fn is_nan(v: &Value) -> bool {
    matches!(v, Value::Number(n) if n.is_nan())
}

/// Equality as merchants mean it: numbers by value (`NaN` equals nothing).
fn equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x == y,
        (Value::Bool(x), Value::Bool(y)) => x == y,
        (Value::Text(x), Value::Text(y)) => x == y,
        _ => false,
    }
}

/// A checked condition: parsed, every name known, boolean.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    expr: Expr,
}

impl Condition {
    /// Parses and checks `source` against `schema`.
    pub fn parse(source: &str, schema: &dyn Schema) -> Result<Self, ExprError> {
        let expr = parse(source)?;
        let t = type_of(&expr, schema)?;
        if t != Type::Bool {
            return Err(ExprError::new(
                "type_mismatch",
                0,
                format!("a condition must be true or false, and this is a {}", t.as_str()),
            ));
        }
        Ok(Self { expr })
    }

    /// Whether the condition holds for `values`.
    pub fn holds(&self, values: &dyn Values) -> bool {
        truth(evaluate(&self.expr, values))
    }

    pub fn expr(&self) -> &Expr {
        &self.expr
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.expr.fmt(f)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    struct Catalogue;

    impl Schema for Catalogue {
        fn type_of(&self, name: &str) -> Option<Type> {
            match name {
                "cart_value" | "cart_items" | "prediction.abandonment" => Some(Type::Number),
                "checkout_started" => Some(Type::Bool),
                "event.type" | "shopper.country" => Some(Type::Text),
                _ => None,
            }
        }
    }

    struct Moment(HashMap<&'static str, Value>);

    impl Values for Moment {
        fn value_of(&self, name: &str) -> Value {
            self.0.get(name).cloned().unwrap_or(Value::Number(0.0))
        }
    }

    fn moment() -> Moment {
        Moment(HashMap::from([
            ("cart_value", Value::Number(80.0)),
            ("cart_items", Value::Number(2.0)),
            ("prediction.abandonment", Value::Number(0.9)),
            ("checkout_started", Value::Bool(false)),
            ("event.type", Value::Text("exit_intent".into())),
            ("shopper.country", Value::Text("FR".into())),
        ]))
    }

    fn holds(source: &str) -> bool {
        Condition::parse(source, &Catalogue).unwrap().holds(&moment())
    }

    #[test]
    fn conditions_evaluate_as_written() {
        assert!(holds("cart_value >= 50 and prediction.abandonment > 0.7 and not checkout_started"));
        assert!(!holds("cart_value >= 100 or checkout_started"));
        assert!(holds("cart_value / cart_items == 40"));
        assert!(holds("-cart_value < 0 and 2 + 3 * 4 == 14 and (2 + 3) * 4 == 20"));
        assert!(holds("shopper.country in [\"FR\", \"BE\"] and event.type != \"purchase\""));
        assert!(!holds("cart_items in [0, 1]"));
        assert!(holds("10 - 4 - 3 == 3 and 24 / 4 / 2 == 3"), "left-associative");
        // A number divided by zero compares false whichever way.
        assert!(!holds("cart_value / 0 > 1") && !holds("cart_value / 0 < 1") && !holds("0 / 0 == 0 / 0"));
        assert!(!holds("cart_value / 0 != 1"), "not even unequal");
        let huge = format!("{} * {} > 0", "9".repeat(300), "9".repeat(300));
        assert!(!holds(&huge), "an overflow is not a number either");
    }

    fn refused(source: &str) -> (String, usize) {
        let e = Condition::parse(source, &Catalogue).unwrap_err();
        (e.code.to_owned(), e.position)
    }

    #[test]
    fn every_refusal_has_a_code_and_a_position() {
        assert_eq!(refused("cart_value >= "), ("syntax_error".into(), 14));
        assert_eq!(refused("cart_valu > 3"), ("unknown_name".into(), 0));
        assert_eq!(refused("cart_value > 3 and basket > 1"), ("unknown_name".into(), 19));
        assert_eq!(refused("cart_value > \"a\""), ("type_mismatch".into(), 13));
        assert_eq!(refused("cart_value + 1"), ("type_mismatch".into(), 0));
        assert_eq!(refused("not cart_value"), ("type_mismatch".into(), 4));
        assert_eq!(refused("1 < cart_value < 3"), ("syntax_error".into(), 15));
        assert_eq!(refused("cart_value = 3"), ("syntax_error".into(), 11));
        assert_eq!(refused("cart_value > 3 && true"), ("syntax_error".into(), 15));
        assert_eq!(refused("event.type == \"exit"), ("syntax_error".into(), 14));
        assert_eq!(refused("(cart_value > 3"), ("syntax_error".into(), 15));
        assert_eq!(refused("cart_value > 3)"), ("syntax_error".into(), 14));
        assert_eq!(refused("shopper.country in []"), ("syntax_error".into(), 20));
        assert_eq!(refused("shopper.country in [1]"), ("type_mismatch".into(), 20));
        assert_eq!(refused(""), ("syntax_error".into(), 0));
        assert_eq!(refused("cart_value > 1."), ("syntax_error".into(), 15));
        assert_eq!(refused("shopper.and == \"x\""), ("syntax_error".into(), 8));
        assert_eq!(refused(&"(".repeat(MAX_DEPTH + 5)), ("too_deep".into(), MAX_DEPTH + 1));
        assert_eq!(refused(&format!("{}true", "not ".repeat(MAX_DEPTH + 5))), ("too_deep".into(), (MAX_DEPTH + 1) * 4));
        let chain = vec!["checkout_started"; MAX_DEPTH + 2].join(" and ");
        assert_eq!(refused(&chain).0, "too_deep");
        // Parentheses do not reset the count: the tree's height is what is bounded.
        let half = vec!["true"; MAX_DEPTH - 2].join(" and ");
        assert_eq!(refused(&format!("({half}) and {half}")).0, "too_deep");
        assert!(Condition::parse(&vec!["checkout_started"; MAX_DEPTH].join(" and "), &Catalogue).is_ok());
        assert_eq!(refused(&"x".repeat(MAX_LEN + 1)), ("too_long".into(), MAX_LEN));
        // Positions count characters, not bytes.
        assert_eq!(refused("event.type == \"é\" and oops"), ("unknown_name".into(), 22));
    }

    #[test]
    fn conditions_print_in_a_canonical_form() {
        let canonical = |s: &str| parse(s).unwrap().to_string();
        assert_eq!(canonical("(a  and b)or(c)"), "a and b or c");
        assert_eq!(canonical("a and (b or c)"), "a and (b or c)");
        assert_eq!(canonical("10 - (4 - 3)"), "10 - (4 - 3)");
        assert_eq!(canonical("(10 - 4) - 3"), "10 - 4 - 3");
        assert_eq!(canonical("not (a == b)"), "not a == b");
        assert_eq!(canonical("(not a) == b"), "(not a) == b");
        assert_eq!(canonical("- (- x)"), "--x");
        assert_eq!(canonical("x in [1,2.50, 3]"), "x in [1, 2.5, 3]");
        assert_eq!(canonical(r#"t == "say \"hi\" \\ o""#), r#"t == "say \"hi\" \\ o""#);
    }

    /// Expressions of any shape over a few names and literals.
    fn expressions() -> impl Strategy<Value = Expr> {
        let at = |kind| Expr { position: 0, kind };
        let leaf = prop_oneof![
            (0u32..1_000_000, 0u32..4)
                .prop_map(move |(n, scale)| at(Kind::Number(f64::from(n) / f64::from(10u32.pow(scale))))),
            "[a-z _\"\\\\é]{0,8}".prop_map(move |t| at(Kind::Text(t))),
            any::<bool>().prop_map(move |b| at(Kind::Bool(b))),
            prop_oneof![Just("cart_value"), Just("prediction.abandonment"), Just("x_1")]
                .prop_map(move |n| at(Kind::Name(n.to_owned()))),
        ];
        leaf.prop_recursive(6, 48, 4, move |inner| {
            let ops = prop_oneof![
                Just(BinOp::Or),
                Just(BinOp::And),
                Just(BinOp::Eq),
                Just(BinOp::Ne),
                Just(BinOp::Lt),
                Just(BinOp::Le),
                Just(BinOp::Gt),
                Just(BinOp::Ge),
                Just(BinOp::Add),
                Just(BinOp::Sub),
                Just(BinOp::Mul),
                Just(BinOp::Div),
            ];
            let literal = prop_oneof![
                (0u32..100).prop_map(move |n| at(Kind::Number(f64::from(n)))),
                "[a-z]{0,3}".prop_map(move |t| at(Kind::Text(t))),
            ];
            prop_oneof![
                inner.clone().prop_map(move |e| at(Kind::Not(Box::new(e)))),
                inner.clone().prop_map(move |e| at(Kind::Neg(Box::new(e)))),
                (ops, inner.clone(), inner.clone()).prop_map(move |(op, l, r)| at(Kind::Binary(
                    op,
                    Box::new(l),
                    Box::new(r)
                ))),
                (inner, prop::collection::vec(literal, 1..4))
                    .prop_map(move |(v, list)| at(Kind::In(Box::new(v), list))),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

        /// Printing any expression and parsing it back gives the same expression, and
        /// printing that gives the same text.
        #[test]
        fn parse_print_parse_is_stable(expr in expressions()) {
            let printed = expr.to_string();
            let parsed = parse(&printed).map_err(|e| TestCaseError::fail(format!("{printed}: {e}")))?;
            prop_assert_eq!(&parsed, &expr, "{}", printed);
            prop_assert_eq!(parsed.to_string(), printed);
        }

        /// Any text at all: the parser answers, never panics, and what it accepts prints
        /// back to something it accepts as the same.
        #[test]
        fn arbitrary_text_never_panics(source in "\\PC{0,120}") {
            if let Ok(expr) = parse(&source) {
                let again = parse(&expr.to_string()).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(again, expr);
            }
            let _ = Condition::parse(&source, &Catalogue);
        }

        /// Text made of the language's own pieces, in any order: far likelier to get deep
        /// into the parser than arbitrary characters.
        #[test]
        fn token_soup_never_panics(pieces in prop::collection::vec(prop_oneof![
            Just("("), Just(")"), Just("["), Just("]"), Just(","), Just("."), Just("-"), Just("+"),
            Just("*"), Just("/"), Just("=="), Just("!="), Just("<"), Just("<="), Just(">"), Just(">="),
            Just("and"), Just("or"), Just("not"), Just("in"), Just("true"), Just("false"),
            Just("cart_value"), Just("prediction"), Just("1"), Just("2.5"), Just("\"t\""), Just("\""),
            Just(" "), Just("\\"),
        ], 0..200)) {
            let source: String = pieces.concat();
            if let Ok(condition) = Condition::parse(&source, &Catalogue) {
                let _ = condition.holds(&moment());
                let again = Condition::parse(&condition.to_string(), &Catalogue)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(again, condition);
            }
        }
    }
}
