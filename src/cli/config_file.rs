//! `omd`'s configuration file: TOML whose keys are `omd`'s long flags without the dashes
//! (`node-name = "n1"`, `heartbeat-ms = 100`, `report-vg = ["data=5G"]`, `real-libvirt =
//! true`). Flags and `OMD_*` variables override the file, the file overrides the defaults.
//! Every value goes through the flag's own parser, so the file accepts exactly what the command
//! line does; an unknown key, a value of the wrong shape or a value the flag refuses is an
//! error naming the file and the key, and the daemon does not start.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::parser::ValueSource;
use clap::{Arg, ArgMatches, Command, CommandFactory, FromArgMatches};

use super::omd::Args;

/// The file read when `--config` is not given, if it exists.
pub const DEFAULT_PATH: &str = "/etc/omraft/omd.toml";

/// Arguments that belong to the command line only.
const NOT_IN_FILE: [&str; 4] = ["config", "print_config", "help", "version"];

/// `omd`'s arguments, the file they were merged with, and where each setting came from.
#[derive(Debug)]
pub struct Parsed {
    pub args: Args,
    /// The configuration file read, if any.
    pub file: Option<PathBuf>,
    /// The long names of the settings the file gave (and nothing overrode).
    from_file: Vec<String>,
    matches: ArgMatches,
}

/// Parses `omd`'s command line, with the configuration file (`--config`, `$OMD_CONFIG`, or
/// `DEFAULT_PATH` when it exists) beneath it. Errors are clap's, to be shown with `exit()`:
/// `--help` and `--version` come back that way too.
pub fn parse<I, T>(argv: I) -> Result<Parsed, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    let argv: Vec<OsString> = argv.into_iter().map(Into::into).collect();
    let mut cmd = Args::command();
    cmd.build();
    // Only to find the file and what the command line sets: what is required, or required
    // together, is checked on the merged arguments.
    let first = cmd
        .clone()
        .ignore_errors(true)
        .try_get_matches_from(argv.iter().cloned())?;
    let file = match first.get_one::<PathBuf>("config") {
        Some(path) => Some(path.clone()),
        None => Some(PathBuf::from(DEFAULT_PATH)).filter(|p| p.exists()),
    };
    let mut from_file = Vec::new();
    let mut file_args = Vec::new();
    if let Some(path) = &file {
        let text = std::fs::read_to_string(path).map_err(|e| {
            cmd.error(
                ErrorKind::Io,
                format!("reading the config file {}: {e}", path.display()),
            )
        })?;
        let table: toml::Table = text
            .parse()
            .map_err(|e| cmd.error(ErrorKind::InvalidValue, format!("{}: {e}", path.display())))?;
        for (key, value) in &table {
            let blame = |why: String| {
                cmd.clone().error(
                    ErrorKind::InvalidValue,
                    format!("{}: key `{key}`: {why}", path.display()),
                )
            };
            let Some(arg) = settable(&cmd).find(|a| a.get_long() == Some(key)) else {
                let keys: Vec<&str> = settable(&cmd).filter_map(Arg::get_long).collect();
                return Err(cmd.error(
                    ErrorKind::UnknownArgument,
                    format!(
                        "{}: unknown key `{key}`; the keys are omd's flags without their dashes: {}",
                        path.display(),
                        keys.join(", ")
                    ),
                ));
            };
            let explicit = matches!(
                first.value_source(arg.get_id().as_str()),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            );
            let values = values(arg, value).map_err(blame)?;
            if explicit {
                continue;
            }
            from_file.push(key.clone());
            match values {
                Values::Flag(true) => file_args.push(OsString::from(format!("--{key}"))),
                Values::Flag(false) => {}
                Values::Some(vs) => file_args.extend(vs.into_iter().map(|v| OsString::from(format!("--{key}={v}")))),
            }
        }
    }
    let merged = argv
        .iter()
        .take(1)
        .cloned()
        .chain(file_args)
        .chain(argv.iter().skip(1).cloned());
    let matches = match cmd.try_get_matches_from_mut(merged) {
        Ok(m) => m,
        Err(e) => return Err(blame_file(&mut cmd, e, file.as_deref(), &from_file)),
    };
    let args = Args::from_arg_matches(&matches)?;
    Ok(Parsed {
        args,
        file,
        from_file,
        matches,
    })
}

/// The arguments a file may set.
fn settable(cmd: &Command) -> impl Iterator<Item = &Arg> {
    cmd.get_arguments()
        .filter(|a| a.get_long().is_some() && !NOT_IN_FILE.contains(&a.get_id().as_str()))
}

/// What one key of the file stands for on the command line.
enum Values {
    /// A flag without a value: given or not.
    Flag(bool),
    /// One value, or several for a repeatable flag.
    Some(Vec<String>),
}

fn values(arg: &Arg, value: &toml::Value) -> Result<Values, String> {
    use toml::Value as V;
    if !arg.get_action().takes_values() {
        return match value {
            V::Boolean(b) => Ok(Values::Flag(*b)),
            other => Err(format!("expected true or false, found {}", other.type_str())),
        };
    }
    let scalar = |v: &V| match v {
        V::String(s) => Ok(s.clone()),
        V::Integer(i) => Ok(i.to_string()),
        other => Err(format!("expected a string or an integer, found {}", other.type_str())),
    };
    match value {
        V::Array(items) if matches!(arg.get_action(), clap::ArgAction::Append) => {
            items.iter().map(scalar).collect::<Result<_, _>>().map(Values::Some)
        }
        V::Array(_) => Err("takes one value, not a list".into()),
        v => scalar(v).map(|s| Values::Some(vec![s])),
    }
}

/// A parse error that a file's value caused, reworded to name the file and the key.
fn blame_file(cmd: &mut Command, e: clap::Error, file: Option<&Path>, from_file: &[String]) -> clap::Error {
    let (Some(file), Some(ContextValue::String(arg))) = (file, e.get(ContextKind::InvalidArg)) else {
        return e;
    };
    let long = arg
        .trim_start_matches("--")
        .split([' ', '='])
        .next()
        .unwrap_or_default();
    if !from_file.iter().any(|k| k == long) {
        return e;
    }
    let text = e.render().to_string();
    let why = text.trim().trim_start_matches("error: ");
    let why = why.split("\n\n").next().unwrap_or(why);
    cmd.error(e.kind(), format!("{}: key `{long}`: {why}", file.display()))
}

impl Parsed {
    /// The settings in effect as a configuration file, each line saying where its value came
    /// from (`omd --print-config`). Unset optional settings are commented out.
    pub fn effective(&self) -> String {
        let mut cmd = Args::command();
        cmd.build();
        let mut out = match &self.file {
            Some(f) => format!("# omd settings in effect; configuration file: {}\n", f.display()),
            None => "# omd settings in effect; no configuration file\n".to_string(),
        };
        for arg in settable(&cmd) {
            let (Some(long), id) = (arg.get_long(), arg.get_id().as_str()) else {
                continue;
            };
            let raw: Vec<String> = self
                .matches
                .get_raw(id)
                .map(|vs| vs.map(|v| v.to_string_lossy().into_owned()).collect())
                .unwrap_or_default();
            let source = if self.from_file.iter().any(|k| k == long) {
                "from the configuration file".to_string()
            } else {
                match self.matches.value_source(id) {
                    Some(ValueSource::CommandLine) => "from the command line".into(),
                    Some(ValueSource::EnvVariable) => {
                        format!(
                            "from ${}",
                            arg.get_env().map(|e| e.to_string_lossy()).unwrap_or_default()
                        )
                    }
                    _ => "default".into(),
                }
            };
            let value = if !arg.get_action().takes_values() {
                Some(self.matches.get_flag(id).to_string())
            } else if matches!(arg.get_action(), clap::ArgAction::Append) {
                Some(format!(
                    "[{}]",
                    raw.iter().map(|v| toml_value(v)).collect::<Vec<_>>().join(", ")
                ))
            } else {
                raw.first().map(|v| toml_value(v))
            };
            match value {
                Some(v) => out.push_str(&format!("{long} = {v}  # {source}\n")),
                None => out.push_str(&format!("# {long} =  (unset)\n")),
            }
        }
        out
    }
}

/// `v` as a TOML value: an integer as it is, anything else a basic string.
fn toml_value(v: &str) -> String {
    if !v.is_empty() && v.len() < 19 && v.bytes().all(|b| b.is_ascii_digit()) && !(v.len() > 1 && v.starts_with('0')) {
        return v.to_string();
    }
    let mut s = String::from("\"");
    for c in v.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            c if c.is_control() => s.push_str(&format!("\\u{:04X}", c as u32)),
            c => s.push(c),
        }
    }
    s.push('"');
    s
}

#[cfg(test)]
mod tests {
    use super::parse;

    /// `omd --config FILE ARGS...` with `text` as FILE.
    fn with_file(text: &str, args: &[&str]) -> (tempfile::TempDir, Result<super::Parsed, String>) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("omd.toml");
        std::fs::write(&file, text).unwrap();
        let argv = [&["omd", "--config", file.to_str().unwrap()][..], args].concat();
        let parsed = parse(argv).map_err(|e| e.render().to_string());
        (dir, parsed)
    }

    #[test]
    fn the_file_sets_any_flag_and_flags_override_it() {
        let text = r#"
            node-name = "n1"
            listen = "10.30.0.11:1215"
            heartbeat-ms = 50
            report-vg = ["data=5G", "fast=1G"]
            drivers = "sim"
            real-libvirt = true
        "#;
        let (_d, parsed) = with_file(text, &["--listen", "127.0.0.1:1300", "--sim-dir", "/tmp/sim"]);
        let p = parsed.unwrap();
        assert_eq!(p.args.node_name.as_deref(), Some("n1"));
        assert_eq!(p.args.listen, "127.0.0.1:1300", "the flag wins");
        assert_eq!(p.args.heartbeat_ms, 50);
        assert_eq!(p.args.election_timeout_ms, 250, "a default");
        assert_eq!(p.args.report_vg, [("data".into(), 5 << 30), ("fast".into(), 1 << 30)]);
        assert!(p.args.real_libvirt);
        let shown = p.effective();
        for line in [
            "node-name = \"n1\"  # from the configuration file",
            "listen = \"127.0.0.1:1300\"  # from the command line",
            "heartbeat-ms = 50  # from the configuration file",
            "election-timeout-ms = 250  # default",
            "report-vg = [\"data=5G\", \"fast=1G\"]  # from the configuration file",
            "real-libvirt = true  # from the configuration file",
            "# advertise =  (unset)",
        ] {
            assert!(shown.lines().any(|l| l == line), "{line:?} not in\n{shown}");
        }
        // What --print-config shows reads back as the same settings.
        let (_d, again) = with_file(&shown, &[]);
        let (mut again, mut p) = (again.unwrap(), p);
        (again.args.config, p.args.config) = (None, None);
        assert_eq!(format!("{:?}", again.args), format!("{:?}", p.args));
    }

    #[test]
    fn bad_files_are_refused_naming_the_file_and_the_key() {
        for (text, words) in [
            (
                "colour = \"blue\"",
                &["omd.toml", "unknown key `colour`", "node-name"][..],
            ),
            ("listen = \"nohost\"", &["omd.toml", "key `listen`", "HOST:PORT"]),
            ("heartbeat-ms = \"soon\"", &["omd.toml", "key `heartbeat-ms`", "soon"]),
            (
                "heartbeat-ms = true",
                &["omd.toml", "key `heartbeat-ms`", "found boolean"],
            ),
            (
                "real-libvirt = \"yes\"",
                &["omd.toml", "key `real-libvirt`", "true or false"],
            ),
            (
                "listen = [\"127.0.0.1:1\"]",
                &["omd.toml", "key `listen`", "not a list"],
            ),
            ("config = \"/etc/other.toml\"", &["omd.toml", "unknown key `config`"]),
            ("drivers = \"sim\"", &["--sim-dir"]),
            ("listen = ", &["omd.toml"]),
        ] {
            let (_d, parsed) = with_file(text, &[]);
            let e = parsed.unwrap_err();
            for w in words {
                assert!(e.contains(w), "{text:?}: {w:?} not in {e}");
            }
        }
        let e = parse(["omd", "--config", "/nonexistent/omd.toml"])
            .unwrap_err()
            .render()
            .to_string();
        assert!(e.contains("/nonexistent/omd.toml"), "{e}");
    }
}
