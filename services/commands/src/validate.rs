//! Field rules shared by the aggregates. Each returns the normalized value or the field error.

use crate::error::FieldError;

/// Trims `value` and checks that it has `min..=max` characters.
pub fn text(field: &str, value: &str, min: usize, max: usize) -> Result<String, FieldError> {
    let trimmed = value.trim();
    let len = trimmed.chars().count();
    if len < min {
        return Err(FieldError::new(
            field,
            if min == 1 {
                "must not be empty".to_owned()
            } else {
                format!("must have at least {min} characters")
            },
        ));
    }
    if len > max {
        return Err(FieldError::new(field, format!("must have at most {max} characters")));
    }
    Ok(trimmed.to_owned())
}

/// Checks a `YYYY-MM-DD` calendar date.
pub fn date(field: &str, value: &str) -> Result<String, FieldError> {
    let well_formed = value.len() == 10
        && value
            .bytes()
            .enumerate()
            .all(|(i, b)| if i == 4 || i == 7 { b == b'-' } else { b.is_ascii_digit() });
    if well_formed && chrono::NaiveDate::parse_from_str(value, "%Y-%m-%d").is_ok() {
        Ok(value.to_owned())
    } else {
        Err(FieldError::new(field, "must be a calendar date YYYY-MM-DD"))
    }
}

/// Up to 50 tags of 1..=50 characters, trimmed, duplicates dropped (first one kept).
pub fn tags(field: &str, values: &[String]) -> Result<Vec<String>, FieldError> {
    if values.len() > 50 {
        return Err(FieldError::new(field, "must have at most 50 tags"));
    }
    let mut out: Vec<String> = Vec::with_capacity(values.len());
    for value in values {
        let tag = text(field, value, 1, 50)
            .map_err(|e| FieldError::new(field, format!("each tag {}", e.message)))?;
        if !out.contains(&tag) {
            out.push(tag);
        }
    }
    Ok(out)
}

/// Gathers field errors so one response names every invalid field.
#[derive(Debug, Default)]
pub struct Errors(Vec<FieldError>);

impl Errors {
    pub fn check<T>(&mut self, result: Result<T, FieldError>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(error) => {
                self.0.push(error);
                None
            }
        }
    }

    pub fn push(&mut self, error: FieldError) {
        self.0.push(error);
    }

    pub fn finish(self) -> Result<(), crate::DomainError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(crate::DomainError::Validation(self.0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_must_be_real_and_zero_padded() {
        assert!(date("d", "2025-01-15").is_ok());
        for bad in ["2025-1-15", "2025-02-30", "15-01-2025", "2025-01-15T00:00:00Z", ""] {
            assert!(date("d", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn text_is_trimmed_and_counted_in_characters() {
        assert_eq!(text("n", "  ab ", 1, 2).as_deref(), Ok("ab"));
        assert!(text("n", "   ", 1, 5).is_err());
        assert!(text("n", "ééé", 1, 2).is_err());
    }

    #[test]
    fn tags_are_deduplicated_and_bounded() {
        assert_eq!(
            tags("t", &["a".into(), " a ".into(), "b".into()]),
            Ok(vec!["a".to_owned(), "b".to_owned()])
        );
        assert!(tags("t", &["".into()]).is_err());
        assert!(tags("t", &vec!["x".to_owned(); 51]).is_err());
    }
}
