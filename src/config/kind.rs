//! Keyword value types shared by the cluster and object catalogs: checking and parsing; and
//! the rules new input meets whatever its type: a value is one line without control characters
//! (`check_line`), a node address is `HOST:PORT` (`check_addr`), a libvirt or migration URI
//! uses an allowed transport (`check_migration_libvirt_uri`, `check_migration_uri`,
//! `check_local_libvirt_uri`).

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

/// The most bytes one keyword value may have.
pub const MAX_VALUE_BYTES: usize = 4096;

/// What every new value meets, whatever its keyword's type: one line of at most
/// `MAX_VALUE_BYTES`, without control characters (nor Unicode's line and paragraph
/// separators), so that no value can start a line, a section or a field of its own where it
/// is printed (`config show`, DRBD resource files, `authorized_keys`).
pub fn check_line(v: &str) -> Result<(), String> {
    if v.len() > MAX_VALUE_BYTES {
        return Err(format!(
            "the value is {} bytes long, more than the {MAX_VALUE_BYTES} allowed",
            v.len()
        ));
    }
    let breaks = |c: char| c.is_control() || c == '\u{2028}' || c == '\u{2029}';
    if let Some((at, c)) = v.char_indices().find(|(_, c)| breaks(*c)) {
        return Err(format!(
            "control character U+{:04X} at byte {at}: a value is one line without control characters",
            u32::from(c)
        ));
    }
    Ok(())
}

/// The longest node address accepted, in bytes: a full DNS name and a port.
pub const MAX_ADDR_BYTES: usize = 253 + 6;

/// A node address, as peers and DRBD reach the node: `HOST:PORT`, HOST a DNS name (labels of
/// letters, digits and '-', not starting or ending with '-', separated by dots; the last
/// not all digits), an IPv4 address or an IPv6 address in brackets, PORT 1 to 65535.
pub fn check_addr(addr: &str) -> Result<(), String> {
    if addr.len() > MAX_ADDR_BYTES {
        return Err(format!(
            "{} bytes long, more than the {MAX_ADDR_BYTES} of a host name and a port",
            addr.len()
        ));
    }
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or("expected HOST:PORT (an IPv6 address in brackets: [::1]:1215)")?;
    check_port(port)?;
    check_host(host)
}

/// A TCP port: 1 to 65535, digits only.
fn check_port(port: &str) -> Result<(), String> {
    let ok = !port.is_empty()
        && port.len() <= 5
        && port.bytes().all(|b| b.is_ascii_digit())
        && port.parse::<u16>().is_ok_and(|p| p != 0);
    ok.then_some(())
        .ok_or_else(|| format!("port {:?} is not a number from 1 to 65535", echo(port)))
}

/// A host: a DNS name, an IPv4 address, or an IPv6 address in brackets.
pub fn check_host(host: &str) -> Result<(), String> {
    if let Some(inner) = host.strip_prefix('[') {
        return match inner.strip_suffix(']').map(str::parse::<std::net::Ipv6Addr>) {
            Some(Ok(_)) => Ok(()),
            _ => Err(format!("{:?} is not an IPv6 address in brackets", echo(host))),
        };
    }
    if host.parse::<std::net::Ipv4Addr>().is_ok() {
        return Ok(());
    }
    let bad = |why: &str| {
        Err(format!(
            "host {:?} is not a host name or an IP address: {why}",
            echo(host)
        ))
    };
    if host.is_empty() || host.len() > 253 {
        return bad("a host name has 1 to 253 characters");
    }
    for label in host.split('.') {
        if label.is_empty() || label.len() > 63 {
            return bad("each dot-separated label has 1 to 63 characters");
        }
        if !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return bad("only letters, digits, '-' and '.' are allowed");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return bad("a label does not start or end with '-'");
        }
    }
    if host
        .rsplit('.')
        .next()
        .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()))
    {
        return bad("its last label is all digits, as only an IPv4 address's is");
    }
    Ok(())
}

/// The libvirt transports a connection to another node may use: the ones the README
/// documents (never `ext`, which runs a command, nor `unix`, `qemu:///`, a local daemon).
pub const LIBVIRT_TRANSPORTS: &[&str] = &["qemu+tcp", "qemu+tls", "qemu+ssh"];

/// The query parameters such a URI may carry (never `command`, the program to run, nor
/// `netcat` or `socket`, what the other side runs).
pub const LIBVIRT_PARAMS: &[&str] = &[
    "keyfile",
    "known_hosts",
    "no_verify",
    "no_tty",
    "pkipath",
    "mode",
    "proxy",
];

/// `migration.libvirt_uri`: `TRANSPORT://[USER@]{host}[:PORT]/system[?PARAM=VALUE&...]`,
/// TRANSPORT one of `LIBVIRT_TRANSPORTS`, PARAM one of `LIBVIRT_PARAMS`: always the target
/// node's own libvirt, `{host}` being its address.
pub fn check_migration_libvirt_uri(v: &str) -> Result<(), String> {
    check_remote_libvirt_uri(v, |host| {
        (host == "{host}").then_some(()).ok_or_else(|| {
            format!(
                "the host must be {{host}}, the target node's address, not {:?}",
                echo(host)
            )
        })
    })
}

/// `omd --libvirt-uri`: `qemu:///system`, this machine's libvirt, or a remote one as
/// `check_migration_libvirt_uri` describes, with a host name or an IP address for HOST.
pub fn check_local_libvirt_uri(v: &str) -> Result<(), String> {
    if v == "qemu:///system" {
        return Ok(());
    }
    check_remote_libvirt_uri(v, check_host).map_err(|e| format!("{e} (or qemu:///system)"))
}

/// `TRANSPORT://[USER@]HOST[:PORT]/system[?PARAM=VALUE&...]`, HOST as `host` checks it.
fn check_remote_libvirt_uri(v: &str, host: impl Fn(&str) -> Result<(), String>) -> Result<(), String> {
    check_line(v)?;
    let form =
        "expected TRANSPORT://[USER@]HOST[:PORT]/system[?PARAM=VALUE&...], TRANSPORT qemu+tcp, qemu+tls or qemu+ssh";
    let (scheme, rest) = v.split_once("://").ok_or_else(|| form.to_string())?;
    if !LIBVIRT_TRANSPORTS.contains(&scheme) {
        return Err(format!(
            "transport {:?} is not allowed: only {}",
            echo(scheme),
            LIBVIRT_TRANSPORTS.join(", ")
        ));
    }
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, Some(q)),
        None => (rest, None),
    };
    let (authority, path) = rest.split_once('/').ok_or_else(|| form.to_string())?;
    if path != "system" {
        return Err(format!("path /{} is not allowed: only /system", echo(path)));
    }
    let host_port = match authority.rsplit_once('@') {
        Some((user, hp)) => {
            let ok = !user.is_empty() && user.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
            if !ok {
                return Err(format!("user {:?}: only letters, digits, '.', '_' and '-'", echo(user)));
            }
            hp
        }
        None => authority,
    };
    match host_port.rsplit_once(':') {
        Some((h, port)) if !h.ends_with(':') && !port.ends_with(']') => {
            host(h)?;
            check_port(port)?;
        }
        _ => host(host_port)?,
    }
    for param in query.into_iter().flat_map(|q| q.split('&')) {
        let (name, value) = param
            .split_once('=')
            .ok_or_else(|| format!("parameter {:?} is not NAME=VALUE", echo(param)))?;
        if !LIBVIRT_PARAMS.contains(&name) {
            return Err(format!(
                "parameter {:?} is not allowed: only {}",
                echo(name),
                LIBVIRT_PARAMS.join(", ")
            ));
        }
        let ok = !value.is_empty()
            && value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-/~+:,".contains(c));
        if !ok {
            return Err(format!(
                "parameter {name}: value {:?} may hold only letters, digits and . _ - / ~ + : ,",
                echo(value)
            ));
        }
    }
    Ok(())
}

/// `migration.uri`: `tcp://{host}` or `tcp://{host}:PORT`, where QEMU sends a live
/// migration's memory: the target node's address.
pub fn check_migration_uri(v: &str) -> Result<(), String> {
    check_line(v)?;
    let rest = v
        .strip_prefix("tcp://")
        .ok_or("only tcp://{host} or tcp://{host}:PORT is allowed")?;
    let port = rest.strip_prefix("{host}").ok_or_else(|| {
        format!(
            "the host must be {{host}}, the target node's address, not {:?}",
            echo(rest)
        )
    })?;
    match port.strip_prefix(':') {
        None if port.is_empty() => Ok(()),
        None => Err(format!("{:?} after tcp://{{host}}: only :PORT may follow", echo(port))),
        Some(p) => check_port(p),
    }
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
    fn a_value_is_one_line_without_control_characters() {
        check_line("qemu+ssh://root@{host}/system?keyfile=/root/.ssh/omraft").unwrap();
        check_line("nodes order").unwrap();
        check_line("é ünïcode").unwrap();
        for (bad, at) in [
            ("tcp://x\n[evil]\nk = v", "U+000A at byte 7"),
            ("a\0b", "U+0000 at byte 1"),
            ("a\rb", "U+000D"),
            ("a\tb", "U+0009"),
            ("a\u{1b}[31m", "U+001B"),
            ("a\u{2028}b", "U+2028"),
        ] {
            let e = check_line(bad).unwrap_err();
            assert!(e.contains(at) && e.contains("one line"), "{bad:?}: {e}");
        }
        let e = check_line(&"x".repeat(MAX_VALUE_BYTES + 1)).unwrap_err();
        assert!(e.contains("4097 bytes"), "{e}");
        check_line(&"x".repeat(MAX_VALUE_BYTES)).unwrap();
    }

    #[test]
    fn node_addresses_are_host_and_port() {
        for good in [
            "10.30.0.11:1215",
            "n1:1215",
            "n1.example.org:1",
            "a:1",
            "[::1]:1215",
            "[fe80::1]:65535",
            "0.0.0.0:1215",
        ] {
            check_addr(good).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        for (bad, why) in [
            ("n1", "HOST:PORT"),
            ("n1:", "port"),
            ("n1:0", "port"),
            ("n1:65536", "port"),
            ("n1:+80", "port"),
            ("n1:12a", "port"),
            (":1215", "host"),
            ("n1 x:1215", "only letters"),
            ("n1\n[evil]:1215", "only letters"),
            ("n1/x:1215", "only letters"),
            ("-n1:1215", "'-'"),
            ("a..b:1215", "label"),
            ("300.1.1.1:1215", "all digits"),
            ("::1:1215", "host"),
            ("[::g]:1215", "IPv6"),
            ("[10.0.0.1]:1215", "IPv6"),
        ] {
            let e = check_addr(bad).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
        let long = format!("{}:1215", "a".repeat(300));
        assert!(check_addr(&long).unwrap_err().contains("bytes long"));
    }

    #[test]
    fn migration_libvirt_uris_use_the_documented_transports_to_the_target() {
        for good in [
            "qemu+tcp://{host}/system",
            "qemu+tls://{host}:16514/system",
            "qemu+ssh://root@{host}/system?keyfile=/root/.ssh/omraft",
            "qemu+ssh://root@{host}/system?keyfile=/root/.ssh/omraft&no_verify=1",
        ] {
            check_migration_libvirt_uri(good).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        for (bad, why) in [
            ("qemu+ext:///system?command=/tmp/evil", "transport \"qemu+ext\""),
            ("qemu+unix:///system", "transport"),
            ("qemu:///system", "transport"),
            ("test:///default", "transport"),
            ("qemu+ssh://{host}/system?command=/tmp/evil", "parameter \"command\""),
            ("qemu+ssh://{host}/system?netcat=/tmp/evil", "parameter \"netcat\""),
            ("qemu+ssh://{host}/system?keyfile=$(reboot)", "value"),
            ("qemu+ssh://{host}/system?keyfile", "NAME=VALUE"),
            ("qemu+tcp://evil.example/system", "{host}"),
            ("qemu+tcp://{host}/session", "/system"),
            ("qemu+tcp://{host}", "expected"),
            ("qemu+tcp://{host}:0/system", "port"),
            ("qemu+ssh://r o@{host}/system", "user"),
            ("qemu+tcp://{host}/system\n[evil]", "one line"),
        ] {
            let e = check_migration_libvirt_uri(bad).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }

    #[test]
    fn migration_uris_are_tcp_to_the_target() {
        check_migration_uri("tcp://{host}:49152").unwrap();
        check_migration_uri("tcp://{host}").unwrap();
        for (bad, why) in [
            ("rdma://{host}:49152", "only tcp://"),
            ("unix:///tmp/sock", "only tcp://"),
            ("tcp://evil.example:49152", "{host}"),
            ("tcp://{host}:49152/x", "port"),
            ("tcp://{host}x", "only :PORT"),
            ("tcp://{host}:0", "port"),
        ] {
            let e = check_migration_uri(bad).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }

    #[test]
    fn omd_libvirt_uri_is_the_local_system_daemon_or_a_documented_transport() {
        check_local_libvirt_uri("qemu:///system").unwrap();
        check_local_libvirt_uri("qemu+tcp://10.0.0.2/system").unwrap();
        check_local_libvirt_uri("qemu+ssh://root@n2.example/system?keyfile=/k").unwrap();
        for bad in [
            "qemu+ext:///system?command=/bin/sh",
            "qemu:///session",
            "qemu+tcp://{host}/system",
        ] {
            let e = check_local_libvirt_uri(bad).unwrap_err();
            assert!(e.contains("qemu:///system"), "{bad:?}: {e}");
        }
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
