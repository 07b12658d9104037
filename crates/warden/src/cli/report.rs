//! `warden report --since DATE [--until DATE] --format html|json|md [--out FILE]`.

use std::path::PathBuf;

use clap::Args;

use crate::report::render::{self, Format};
use crate::report::{self as evidence, time};
use crate::store::Store;

#[derive(Args)]
pub struct ReportArgs {
    /// Start of the period, UTC: YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS][Z] (inclusive).
    #[arg(long)]
    since: String,
    /// End of the period, UTC (exclusive; a date alone includes that whole day). Default: now.
    #[arg(long)]
    until: Option<String>,
    #[arg(long, value_enum, default_value_t = Format::Html)]
    format: Format,
    /// Write the report here instead of standard output.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Config file naming the store.
    #[arg(long, env = "WARDEN_CONFIG")]
    config: Option<PathBuf>,
}

pub async fn run(args: ReportArgs) -> anyhow::Result<()> {
    let (since, _) = time::parse(&args.since).map_err(|e| anyhow::anyhow!("--since: {e}"))?;
    let until = match &args.until {
        None => crate::events::now_ms(),
        Some(text) => {
            let (ms, date_only) = time::parse(text).map_err(|e| anyhow::anyhow!("--until: {e}"))?;
            if date_only {
                time::end_of_day(ms)
            } else {
                ms
            }
        }
    };
    if until <= since {
        anyhow::bail!("--until must be after --since");
    }
    let config = super::load_config(args.config.as_ref())?;
    let store = Store::open(&config.storage).await?;
    let report = evidence::build(&store, since, until).await?;
    let text = render::render(&report, args.format);
    match args.out {
        Some(path) => std::fs::write(&path, text)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?,
        None => print!("{text}"),
    }
    Ok(())
}
