//! A local stand-in for the CDSE OData catalogue, serving one synthetic day built
//! from the real fixture, so `link-fetcher fetch` can be tried with no internet:
//!
//! ```sh
//! cargo run -p integration-tests --bin catalogue-stub -- --date 2024-04-01 --products 3000 &
//! SEARCH_URL=http://127.0.0.1:8900 cargo run -p link-fetcher -- fetch --date 2024-04-01 --dry-run
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use chrono::NaiveDate;
use integration_tests::catalogue_stub::{CatalogueStub, synthetic_day};

/// Tiles of the real fixtures: 28PHQ and 55PBR are processed by HLS, 54PXA and 99ZZZ are not.
const TILES: [&str; 4] = ["54PXA", "28PHQ", "55PBR", "99ZZZ"];

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut date: NaiveDate = "2024-04-01".parse()?;
    let mut products = 3_000;
    let mut listen: SocketAddr = "127.0.0.1:8900".parse()?;
    let mut page_delay_ms = 0;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--date" => date = value.parse().context("--date YYYY-MM-DD")?,
            "--products" => products = value.parse().context("--products N")?,
            "--listen" => listen = value.parse().context("--listen HOST:PORT")?,
            "--page-delay-ms" => page_delay_ms = value.parse().context("--page-delay-ms N")?,
            other => anyhow::bail!(
                "unknown flag {other}: use --date, --products, --listen, --page-delay-ms"
            ),
        }
    }
    let stub = CatalogueStub::start_on(listen).await;
    stub.add_products(synthetic_day("stub", date, products, &TILES));
    stub.set_page_delay(Duration::from_millis(page_delay_ms));
    println!(
        "catalogue stub: {products} products published on {date} (platforms S2A/S2B/S2C, tiles {TILES:?}) at {}",
        stub.url()
    );
    tokio::signal::ctrl_c().await?;
    Ok(())
}
