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

/// One of `allowed`.
pub fn one_of(field: &str, value: &str, allowed: &[&str]) -> Result<String, FieldError> {
    if allowed.contains(&value) {
        Ok(value.to_owned())
    } else {
        Err(FieldError::new(field, format!("must be one of {}", allowed.join(", "))))
    }
}

/// Up to `max` strings matching `check`, duplicates dropped (first one kept).
pub fn list(
    field: &str,
    values: &[String],
    max: usize,
    check: impl Fn(&str) -> Option<String>,
    expected: &str,
) -> Result<Vec<String>, FieldError> {
    if values.len() > max {
        return Err(FieldError::new(field, format!("must have at most {max} items")));
    }
    let mut out: Vec<String> = Vec::with_capacity(values.len());
    for value in values {
        let item = check(value.trim())
            .ok_or_else(|| FieldError::new(field, format!("{value:?} is not {expected}")))?;
        if !out.contains(&item) {
            out.push(item);
        }
    }
    Ok(out)
}

/// `CWE-<n>`, normalized to upper case.
pub fn cwe(value: &str) -> Option<String> {
    let upper = value.to_ascii_uppercase();
    let number = upper.strip_prefix("CWE-")?;
    is_number(number).then_some(upper)
}

/// `CVE-<yyyy>-<n>` with at least four digits in the sequence part, as MITRE assigns them.
pub fn cve(value: &str) -> Option<String> {
    let upper = value.to_ascii_uppercase();
    let rest = upper.strip_prefix("CVE-")?;
    let (year, sequence) = rest.split_once('-')?;
    (year.len() == 4 && is_number(year) && sequence.len() >= 4 && is_number(sequence)).then_some(upper)
}

fn is_number(text: &str) -> bool {
    !text.is_empty() && text.len() <= 10 && text.bytes().all(|b| b.is_ascii_digit())
}

/// An absolute `http`/`https` URL (for references).
pub fn http_url(value: &str) -> Option<String> {
    let url = url::Url::parse(value).ok()?;
    (matches!(url.scheme(), "http" | "https") && url.host().is_some()).then(|| url.to_string())
}

/// A DNS name of dot-separated labels (letters, digits, inner hyphens; 1..=63 each, 253 in all),
/// lowercased without a trailing dot. `min_labels` is 2 for a domain, 1 for a hostname.
pub fn dns_name(value: &str, min_labels: usize, wildcard: bool) -> Option<String> {
    let lower = value.trim_end_matches('.').to_ascii_lowercase();
    let body = match lower.strip_prefix("*.") {
        Some(rest) if wildcard => rest,
        _ => lower.as_str(),
    };
    let labels: Vec<&str> = body.split('.').collect();
    let label_ok = |l: &&str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let tld_ok = labels.last().is_some_and(|tld| !tld.bytes().all(|b| b.is_ascii_digit()));
    (lower.len() <= 253 && labels.len() >= min_labels && labels.iter().all(label_ok) && tld_ok)
        .then_some(lower)
}

/// An IPv4 or IPv6 address in canonical form.
pub fn ip(value: &str) -> Option<String> {
    value.parse::<std::net::IpAddr>().ok().map(|ip| ip.to_string())
}

/// `address/prefix` with the prefix in range and no host bits set, in canonical form.
pub fn cidr(value: &str) -> Option<String> {
    let (address, prefix) = value.split_once('/')?;
    if prefix.is_empty() || prefix.len() > 3 || !prefix.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let prefix: u32 = prefix.parse().ok()?;
    let address: std::net::IpAddr = address.parse().ok()?;
    let host_bits_clear = match address {
        std::net::IpAddr::V4(v4) => prefix <= 32 && u32::from(v4).checked_shl(prefix).unwrap_or(0) == 0,
        std::net::IpAddr::V6(v6) => prefix <= 128 && u128::from(v6).checked_shl(prefix).unwrap_or(0) == 0,
    };
    host_bits_clear.then(|| format!("{address}/{prefix}"))
}

/// A target URL: any scheme with a host, normalized (lowercase scheme and host, default port dropped).
pub fn target_url(value: &str) -> Option<String> {
    let url = url::Url::parse(value).ok()?;
    url.host().is_some().then(|| url.to_string())
}

/// The CVSS scoring of a vector: its canonical text, version and score.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    pub vector: String,
    pub version: &'static str,
    pub score: f64,
    /// The qualitative rating as a Pwnbook severity (`none` maps to `info`).
    pub severity: &'static str,
}

const V3_BASE: &[&str] = &["AV", "AC", "PR", "UI", "S", "C", "I", "A"];

/// Scores a CVSS v3.0, v3.1 or v4.0 vector: the base score for v3 (temporal and environmental
/// metrics stay in the vector), the one CVSS-BTE score of all given metrics for v4.
pub fn cvss(field: &str, vector: &str) -> Result<Scored, FieldError> {
    let invalid =
        |why: String| FieldError::new(field, format!("is not a valid CVSS v3.0, v3.1 or v4.0 vector: {why}"));
    let vector = vector.trim();
    let version = match vector.split('/').next() {
        Some("CVSS:3.0") => "3.0",
        Some("CVSS:3.1") => "3.1",
        Some("CVSS:4.0") => "4.0",
        _ => return Err(invalid("it must start with CVSS:3.0/, CVSS:3.1/ or CVSS:4.0/".to_owned())),
    };
    let parsed: cvss::Cvss = vector.parse().map_err(|e: cvss::Error| invalid(e.to_string()))?;
    // The crate reads `av:n` as `AV:N`; FIRST's vector schemas (and the tools reading our exports)
    // take the spelling the specification gives only, so another one is refused rather than
    // stored as sent.
    if let Some(part) = vector.split('/').skip(1).find(|part| !canonical_case(part)) {
        return Err(invalid(format!(
            "{part} is not written as the specification writes it (e.g. AV:N, U:Green)"
        )));
    }
    if version != "4.0" {
        // The crate accepts v3 vectors without some base metrics (scoring them as 0).
        let given: Vec<&str> = vector.split('/').filter_map(|part| part.split(':').next()).collect();
        if let Some(missing) = V3_BASE.iter().find(|m| !given.contains(m)) {
            return Err(invalid(format!("the base metric {missing} is missing")));
        }
    }
    let severity = match parsed.severity() {
        cvss::Severity::None => "info",
        cvss::Severity::Low => "low",
        cvss::Severity::Medium => "medium",
        cvss::Severity::High => "high",
        cvss::Severity::Critical => "critical",
    };
    Ok(Scored { vector: vector.to_owned(), version, score: parsed.score(), severity })
}

/// Whether a metric of a vector is spelt as FIRST writes it: upper case, but for CVSS v4's
/// Provider Urgency, whose values are `Clear`, `Green`, `Amber` and `Red` (`X` when not defined).
fn canonical_case(part: &str) -> bool {
    match part.split_once(':') {
        Some(("U", value)) => ["X", "Clear", "Green", "Amber", "Red"].contains(&value),
        _ => !part.bytes().any(|b| b.is_ascii_lowercase()),
    }
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

    /// Expected scores as the FIRST calculators give them (cross-checked with the RedHat `cvss`
    /// Python package 3.6, which is tested against those calculators): v3 base scores including
    /// scope-changed vectors and vectors carrying temporal/environmental metrics (which must not
    /// move the base score), and v4 scores including threat and environmental metrics.
    #[test]
    fn cvss_scores_match_the_first_calculators() {
        let table: &[(&str, f64, &str)] = &[
            ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", 9.8, "critical"),
            ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:C/C:H/I:H/A:H", 10.0, "critical"),
            ("CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:C/C:L/I:L/A:N", 6.1, "medium"),
            ("CVSS:3.1/AV:N/AC:L/PR:L/UI:N/S:C/C:L/I:L/A:N", 6.4, "medium"),
            ("CVSS:3.1/AV:N/AC:L/PR:H/UI:N/S:C/C:H/I:H/A:H", 9.1, "critical"),
            ("CVSS:3.1/AV:L/AC:L/PR:L/UI:N/S:U/C:H/I:H/A:H", 7.8, "high"),
            ("CVSS:3.1/AV:L/AC:L/PR:L/UI:N/S:C/C:H/I:H/A:H", 8.8, "high"),
            ("CVSS:3.1/AV:A/AC:H/PR:N/UI:R/S:U/C:L/I:N/A:N", 2.6, "low"),
            ("CVSS:3.1/AV:P/AC:H/PR:H/UI:R/S:U/C:L/I:N/A:N", 1.6, "low"),
            ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:N", 0.0, "info"),
            ("CVSS:3.1/AV:N/AC:H/PR:N/UI:N/S:U/C:H/I:N/A:N", 5.9, "medium"),
            ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:H", 7.5, "high"),
            ("CVSS:3.1/AV:N/AC:L/PR:L/UI:N/S:U/C:H/I:H/A:H", 8.8, "high"),
            ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H/E:P/RL:O/RC:C", 9.8, "critical"),
            ("CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:C/C:L/I:L/A:N/E:F/RL:W/RC:R", 6.1, "medium"),
            ("CVSS:3.1/AV:A/AC:H/PR:L/UI:N/S:U/C:L/I:L/A:N/E:P/RL:T/RC:R/CR:X/IR:X/AR:H/MAV:X/MAC:H/MPR:X/MUI:R/MS:C/MC:L/MI:X/MA:N", 3.7, "low"),
            ("CVSS:3.1/AV:L/AC:H/PR:H/UI:R/S:C/C:L/I:L/A:L/E:U/RL:U/RC:U", 4.7, "medium"),
            ("CVSS:3.0/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", 9.8, "critical"),
            ("CVSS:3.0/AV:N/AC:L/PR:N/UI:R/S:C/C:L/I:L/A:N", 6.1, "medium"),
            ("CVSS:3.0/AV:L/AC:L/PR:N/UI:R/S:U/C:H/I:H/A:H", 7.8, "high"),
            ("CVSS:3.0/AV:N/AC:H/PR:L/UI:R/S:C/C:H/I:L/A:N/E:H/RL:O/RC:C", 6.5, "medium"),
            ("CVSS:3.0/AV:A/AC:L/PR:N/UI:N/S:C/C:N/I:L/A:H", 8.2, "high"),
            ("CVSS:3.0/AV:L/AC:L/PR:L/UI:N/S:C/C:L/I:H/A:L", 7.9, "high"),
            ("CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N", 9.3, "critical"),
            ("CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:H/SI:H/SA:H", 10.0, "critical"),
            ("CVSS:4.0/AV:N/AC:L/AT:N/PR:L/UI:N/VC:H/VI:L/VA:N/SC:N/SI:N/SA:N", 7.1, "high"),
            ("CVSS:4.0/AV:L/AC:L/AT:N/PR:L/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N", 8.5, "high"),
            ("CVSS:4.0/AV:A/AC:H/AT:P/PR:N/UI:A/VC:L/VI:N/VA:N/SC:N/SI:N/SA:N", 2.0, "low"),
            ("CVSS:4.0/AV:P/AC:L/AT:N/PR:N/UI:N/VC:N/VI:N/VA:N/SC:N/SI:N/SA:N", 0.0, "info"),
            ("CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:P/VC:L/VI:L/VA:N/SC:L/SI:L/SA:N", 5.3, "medium"),
            ("CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N/E:U", 8.1, "high"),
            ("CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N/E:P", 8.9, "high"),
            ("CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N/E:A", 9.3, "critical"),
            ("CVSS:4.0/AV:N/AC:H/AT:P/PR:L/UI:P/VC:H/VI:H/VA:H/SC:L/SI:L/SA:L/E:P", 6.6, "medium"),
            ("CVSS:4.0/AV:L/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:H/SI:H/SA:H/E:U/CR:H/IR:H/AR:H/MAV:N", 9.1, "critical"),
            ("CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:L/VI:L/VA:L/SC:N/SI:N/SA:N/E:A/MSI:S/MSA:S", 9.1, "critical"),
            ("CVSS:4.0/AV:N/AC:L/AT:N/PR:H/UI:N/VC:N/VI:L/VA:N/SC:N/SI:N/SA:N/E:U", 1.2, "low"),
        ];
        assert!(table.len() >= 30);
        for (vector, score, severity) in table {
            let scored = cvss("cvss", vector).unwrap_or_else(|e| panic!("{vector}: {e:?}"));
            assert_eq!((scored.score, scored.severity), (*score, *severity), "{vector}");
            assert_eq!(scored.version, &vector[5..8], "{vector}");
        }
    }

    #[test]
    fn provider_urgency_keeps_its_mixed_case() {
        for urgency in ["Clear", "Green", "Amber", "Red"] {
            let vector =
                format!("CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N/U:{urgency}");
            assert!(cvss("cvss", &vector).is_ok(), "{vector}");
        }
    }

    #[test]
    fn bad_cvss_vectors_are_rejected() {
        for bad in [
            "",
            "AV:N/AC:L/Au:N/C:P/I:P/A:P",
            "CVSS:2.0/AV:N/AC:L/Au:N/C:P/I:P/A:P",
            "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H",
            "CVSS:3.1/AV:X/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
            "CVSS:3.1/AV:N/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
            "CVSS:3.1/AV:n/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
            "CVSS:3.1/av:N/ac:L/pr:N/ui:N/s:U/c:H/i:H/a:H",
            "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:n",
            "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N/U:green",
            "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N/U:GREEN",
            "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N",
            "CVSS:4.1/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N",
        ] {
            assert!(cvss("cvss", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn target_values_are_validated_and_normalized() {
        assert_eq!(ip("2001:DB8:0:0::1").as_deref(), Some("2001:db8::1"));
        assert_eq!(ip("10.0.0.256"), None);
        assert_eq!(cidr("10.0.0.0/8").as_deref(), Some("10.0.0.0/8"));
        assert_eq!(cidr("2001:DB8::/32").as_deref(), Some("2001:db8::/32"));
        for bad in ["10.0.0.1/24", "10.0.0.0/33", "10.0.0.0", "10.0.0.0/", "::/129", "x/8"] {
            assert_eq!(cidr(bad), None, "{bad}");
        }
        assert_eq!(dns_name("WWW.Acme.test.", 2, true).as_deref(), Some("www.acme.test"));
        assert_eq!(dns_name("*.acme.test", 2, true).as_deref(), Some("*.acme.test"));
        assert_eq!(dns_name("dc01", 1, false).as_deref(), Some("dc01"));
        for bad in ["acme", "-a.test", "a_b.test", "a..test", "10.0.0.1", "*.acme.test"] {
            assert_eq!(dns_name(bad, 2, false), None, "{bad}");
        }
        assert_eq!(target_url("HTTPS://Acme.TEST:443/Login").as_deref(), Some("https://acme.test/Login"));
        assert_eq!(target_url("not a url"), None);
        assert_eq!(cwe("cwe-79").as_deref(), Some("CWE-79"));
        assert_eq!(cve("cve-2021-44228").as_deref(), Some("CVE-2021-44228"));
        for bad in ["CVE-21-44228", "CVE-2021-1", "CVE-2021-", "CWE-2021"] {
            assert_eq!(cve(bad), None, "{bad}");
        }
        assert_eq!(cwe("CWE-x"), None);
    }
}
