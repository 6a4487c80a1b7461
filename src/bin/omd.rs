//! The omraft node daemon. See `omd --help`.

use omraft::cli::omd::LogFormat;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let parsed = match omraft::cli::config_file::parse(std::env::args_os()) {
        Ok(p) => p,
        Err(e) => e.exit(),
    };
    if parsed.args.print_config {
        print!("{}", parsed.effective());
        return std::process::ExitCode::SUCCESS;
    }
    let filter = tracing_subscriber::EnvFilter::try_from_env("OMD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn,sled=warn,h2=warn,tower=warn"));
    let log = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match parsed.args.log_format {
        LogFormat::Json => log.json().init(),
        LogFormat::Text => log
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
    match &parsed.file {
        Some(f) => tracing::info!("configuration file: {}", f.display()),
        None => tracing::info!("no configuration file"),
    }
    match omraft::cli::omd::run(parsed.args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("omd: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
