//! `warden report --since DATE [--until DATE] --format html|json|md [--out FILE]`, built
//! from the store or by a running Warden's admin API (the same document either way).

use std::path::PathBuf;

use clap::Args;

use super::remote::encode;
use super::target::{open_existing, Target};
use crate::report::render::{self, Format};
use crate::report::{self as evidence, time};

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
    pub config: Option<PathBuf>,
}

pub async fn run(args: ReportArgs, target: Target) -> anyhow::Result<()> {
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
    let text = match &target {
        Target::Local(path) => {
            let (_, store) = open_existing(path.as_ref()).await?;
            render::render(&evidence::build(&store, since, until).await?, args.format)
        }
        Target::Remote(api) => {
            let format = match args.format {
                Format::Json => "json",
                Format::Md => "md",
                Format::Html => "html",
            };
            // Without --until the API's own clock says when "now" is.
            let mut query = format!("since={}&format={format}", encode(&args.since));
            if let Some(text) = &args.until {
                query.push_str(&format!("&until={}", encode(text)));
            }
            api.get_text(&format!("/admin/v1/report?{query}")).await?
        }
    };
    match args.out {
        Some(path) => std::fs::write(&path, text)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?,
        None => print!("{text}"),
    }
    Ok(())
}
