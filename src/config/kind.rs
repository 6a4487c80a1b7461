//! Keyword value types shared by the cluster and object catalogs: checking and parsing.

use super::echo::echo;

/// The type of a keyword's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A DNS-label-like name: lowercase letters, digits, '-'.
    Name,
    /// One of a fixed list.
    Choice(&'static [&'static str]),
    /// A name as LVM or a config map key allows: letters, digits, '.', '_', '-', '+'.
    Ident,
    /// `true` or `false`.
    Bool,
    /// A non-negative integer.
    Int,
    /// A size: a number with an optional unit k, m, g, t (powers of 1024, any case, optional
    /// trailing `b`/`ib`), e.g. `4G`, `512m`, `10g`.
    Size,
    /// A duration: `90s`, `1m30s`, `2h`, or plain seconds.
    Duration,
    /// A short interval with a unit: `300ms`, `3s`, `1m`.
    Interval,
    /// Free text on one line; references such as `{name}` are allowed.
    Text,
    /// A whitespace-separated list of node names or references.
    Nodes,
    /// A UUID, set by the cluster.
    Uuid,
}

impl Kind {
    /// The type's name in `config doc`.
    pub fn describe(&self) -> String {
        match self {
            Kind::Name => "name".into(),
            Kind::Choice(c) => c.join("|"),
            Kind::Ident => "identifier".into(),
            Kind::Bool => "bool".into(),
            Kind::Int => "integer".into(),
            Kind::Size => "size".into(),
            Kind::Duration => "duration".into(),
            Kind::Interval => "interval (ms, s, m)".into(),
            Kind::Text => "text".into(),
            Kind::Nodes => "node list".into(),
            Kind::Uuid => "uuid".into(),
        }
    }

    /// Checks a raw value (references are checked separately, by `refs`).
    pub fn check(&self, v: &str) -> Result<(), String> {
        match self {
            Kind::Name => check_name(v),
            Kind::Choice(allowed) => {
                if allowed.contains(&v) {
                    Ok(())
                } else {
                    Err(format!("allowed values: {}", allowed.join(", ")))
                }
            }
            Kind::Ident => {
                let ok = !v.is_empty()
                    && v.len() <= 127
                    && !v.starts_with('-')
                    && v.chars().all(|c| c.is_ascii_alphanumeric() || "._-+".contains(c));
                ok.then_some(())
                    .ok_or_else(|| "1 to 127 letters, digits, '.', '_', '-' or '+', not starting with '-'".into())
            }
            Kind::Bool => parse_bool(v).map(|_| ()),
            Kind::Int => v
                .parse::<u64>()
                .map(|_| ())
                .map_err(|_| "expected a whole number".into()),
            Kind::Size => parse_size(v).map(|_| ()),
            Kind::Duration => parse_duration(v).map(|_| ()),
            Kind::Interval => parse_millis(v).map(|_| ()),
            Kind::Text => Ok(()),
            Kind::Nodes => {
                for n in v.split_whitespace() {
                    if !(n.starts_with('{') && n.ends_with('}')) {
                        check_name(n).map_err(|e| format!("node {:?}: {e}", echo(n)))?;
                    }
                }
                Ok(())
            }
            Kind::Uuid => {
                let ok = v.len() == 36
                    && v.char_indices().all(|(i, c)| {
                        if [8, 13, 18, 23].contains(&i) {
                            c == '-'
                        } else {
                            c.is_ascii_hexdigit()
                        }
                    });
                ok.then_some(()).ok_or_else(|| "expected a UUID".into())
            }
        }
    }
}

/// Names of nodes, namespaces, objects and pools: 1 to 63 of `[a-z0-9-]`, not starting with '-'.
pub fn check_name(v: &str) -> Result<(), String> {
    if v.is_empty() || v.len() > 63 {
        return Err("must have 1 to 63 characters".into());
    }
    if !v
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        || v.starts_with('-')
    {
        return Err("only lowercase letters, digits and '-' (not first) are allowed".into());
    }
    Ok(())
}

pub fn parse_bool(v: &str) -> Result<bool, String> {
    match v {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err("expected true or false".into()),
    }
}

/// Bytes in a size such as `4G`, `512m`, `10gib`, `1024`.
pub fn parse_size(v: &str) -> Result<u64, String> {
    let bad = || format!("{:?} is not a size like 512M, 4G or 1T", echo(v));
    let lower = v.trim().to_ascii_lowercase();
    let digits_end = lower
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(lower.len());
    let (num, unit) = lower.split_at(digits_end);
    let num: f64 = num.parse().map_err(|_| bad())?;
    let unit = unit.trim_end_matches("ib").trim_end_matches('b');
    let mult: u64 = match unit {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        _ => return Err(bad()),
    };
    let bytes = num * mult as f64;
    if !(1.0..=(1u64 << 60) as f64).contains(&bytes) {
        return Err(format!("{:?} is out of range (1 byte to 1 EiB)", echo(v)));
    }
    Ok(bytes as u64)
}

/// A size as the tutorial prints it: `10g`, `5g`, `512m`, `0`.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [(u64, &str); 4] = [(1 << 40, "t"), (1 << 30, "g"), (1 << 20, "m"), (1 << 10, "k")];
    if bytes == 0 {
        return "0".into();
    }
    for (m, u) in UNITS {
        if bytes >= m {
            let v = bytes as f64 / m as f64;
            return if (v - v.round()).abs() < 0.005 {
                format!("{}{u}", v.round() as u64)
            } else {
                format!("{v:.2}{u}")
            };
        }
    }
    format!("{bytes}")
}

/// Milliseconds in `300ms`, `3s`, `1m` (a unit is required, and the result at least 1 ms).
pub fn parse_millis(v: &str) -> Result<u64, String> {
    let bad = || format!("{:?} is not an interval like 300ms, 3s or 1m", echo(v));
    let split = v.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (n, unit) = v.split_at(split);
    let n: u64 = n.parse().map_err(|_| bad())?;
    let ms = match unit {
        "ms" => n,
        "s" => n.checked_mul(1000).ok_or_else(bad)?,
        "m" => n.checked_mul(60_000).ok_or_else(bad)?,
        _ => return Err(bad()),
    };
    if ms == 0 {
        return Err(format!("{:?} must be at least 1ms", echo(v)));
    }
    Ok(ms)
}

/// Seconds in `90s`, `1m30s`, `2h`, `1d`, or plain seconds.
pub fn parse_duration(v: &str) -> Result<u64, String> {
    let bad = || format!("{:?} is not a duration like 90s, 1m30s or 2h", echo(v));
    if v.is_empty() {
        return Err(bad());
    }
    if let Ok(s) = v.parse::<u64>() {
        return Ok(s);
    }
    let (mut total, mut num) = (0u64, String::new());
    for c in v.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let mult = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            _ => return Err(bad()),
        };
        let n: u64 = num.parse().map_err(|_| bad())?;
        total = n.checked_mul(mult).and_then(|s| total.checked_add(s)).ok_or_else(bad)?;
        num.clear();
    }
    if !num.is_empty() {
        return Err(bad());
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4G"), Ok(4 << 30));
        assert_eq!(parse_size("512mib"), Ok(512 << 20));
        assert_eq!(parse_size("1.5g"), Ok(3 << 29));
        for bad in ["", "G", "4X", "-1G", "0"] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
        assert_eq!(format_size(10 << 30), "10g");
        assert_eq!(format_size(0), "0");
        assert_eq!(format_size(3 << 29), "1.50g");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1m30s"), Ok(90));
        assert_eq!(parse_duration("120"), Ok(120));
        assert!(parse_duration("1x").is_err());
        assert!(parse_duration("5m3").is_err());
    }

    #[test]
    fn intervals() {
        assert_eq!(parse_millis("300ms"), Ok(300));
        assert_eq!(parse_millis("3s"), Ok(3000));
        assert!(parse_millis("3").is_err());
        assert!(parse_millis("0ms").is_err());
        assert!(parse_millis("3h").is_err());
    }

    #[test]
    fn huge_intervals_and_durations_are_refused_not_overflowed() {
        assert!(parse_millis("18446744073709552s").is_err());
        assert!(parse_millis("18446744073709551m").is_err());
        assert!(parse_duration("18446744073709551615d").is_err());
        assert!(parse_duration("1d18446744073709551615s").is_err());
        assert_eq!(parse_millis("18446744073709551615ms"), Ok(u64::MAX));
    }

    #[test]
    fn kinds() {
        assert!(Kind::Uuid.check("a6867a1e-e8b3-46eb-919f-78d4c60ca9c9").is_ok());
        assert!(Kind::Uuid.check("a6867a1e").is_err());
        assert!(Kind::Nodes.check("n1 n2 {clusternodes}").is_ok());
        assert!(Kind::Nodes.check("n1 N2").is_err());
        assert!(Kind::Bool.check("yes").is_err());
    }
}
