//! The omraft command line client. See `omctl --help`.

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let code = omraft::cli::main().await;
    std::process::exit(code);
}
