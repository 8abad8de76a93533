//! Amounts of money as the platform keeps them: whole minor units of their ISO 4217
//! currency, as many decimals as the currency has (cents of EUR, yen, fils of KWD).

/// Decimals of `currency`'s minor unit (ISO 4217): 0 for JPY, 3 for KWD, 2 for most, and 2
/// for a code the table does not know (what most currencies use).
pub fn minor_exponent(currency: &str) -> u32 {
    match currency {
        // No minor unit in use.
        "BIF" | "CLP" | "DJF" | "GNF" | "ISK" | "JPY" | "KMF" | "KRW" | "PYG" | "RWF" | "UGX" | "UYI" | "VND"
        | "VUV" | "XAF" | "XOF" | "XPF" => 0,
        // Thousandths.
        "BHD" | "IQD" | "JOD" | "KWD" | "LYD" | "OMR" | "TND" => 3,
        // Units of account with four decimals.
        "CLF" | "UYW" => 4,
        _ => 2,
    }
}

/// `amount` in major units (`49.99` EUR, `1200` JPY, `12.345` KWD) as whole minor units of
/// `currency` (`4999`, `1200`, `12345`), rounded to the nearest.
pub fn to_minor(amount: f64, currency: &str) -> i64 {
    (amount * 10f64.powi(minor_exponent(currency) as i32)).round() as i64
}

/// Minor units of `currency` as a decimal in major units (`4999` EUR → `"49.99"`, `1200`
/// JPY → `"1200"`), for people to read.
pub fn format_major(minor: f64, currency: &str) -> String {
    let exponent = minor_exponent(currency);
    format!("{:.*}", exponent as usize, minor / 10f64.powi(exponent as i32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_take_as_many_decimals_as_their_currency() {
        assert_eq!(to_minor(49.99, "EUR"), 4999);
        assert_eq!(to_minor(1200.0, "JPY"), 1200);
        assert_eq!(to_minor(1200.4, "JPY"), 1200, "yen have no minor unit");
        assert_eq!(to_minor(12.345, "KWD"), 12345, "the third decimal is kept");
        assert_eq!(to_minor(0.1 + 0.2, "USD"), 30, "rounded, not truncated");
        assert_eq!(to_minor(5.0, "ZZZ"), 500, "an unknown code counts in hundredths");
        assert_eq!(format_major(4999.0, "EUR"), "49.99");
        assert_eq!(format_major(1200.0, "JPY"), "1200");
        assert_eq!(format_major(12345.0, "KWD"), "12.345");
        assert_eq!(format_major(-250.0, "USD"), "-2.50");
    }
}
