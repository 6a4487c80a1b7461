//! Man pages from the clap definitions: `omctl(1)`, one `omctl-COMMAND(1)` per command and
//! `omd(8)`, so `--help` and `man` never disagree.

use std::path::{Path, PathBuf};

use clap::CommandFactory;

/// Writes the pages into `dir` (created if missing) and returns their paths.
pub fn write(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut omctl = super::Cli::command();
    omctl.build();
    let mut pages = vec![page(dir, omctl.clone(), "omctl", "1")?];
    for sub in omctl
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        let name = format!("omctl-{}", sub.get_name());
        pages.push(page(dir, sub.clone(), &name, "1")?);
    }
    pages.push(page(dir, super::omd::Args::command(), "omd", "8")?);
    Ok(pages)
}

fn page(dir: &Path, cmd: clap::Command, name: &str, section: &str) -> std::io::Result<PathBuf> {
    let cmd = cmd
        .name(name.to_string())
        .display_name(name.to_string())
        .bin_name(name.replace('-', " "));
    let mut roff = Vec::new();
    clap_mangen::Man::new(cmd).section(section).render(&mut roff)?;
    let path = dir.join(format!("{name}.{section}"));
    std::fs::write(&path, roff)?;
    Ok(path)
}
