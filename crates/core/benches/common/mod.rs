//! Payloads the benchmarks share, built from the real CDSE fixtures.

use hls_core::TileSet;
use serde_json::Value;

const ODATA_PAGE: &str = include_str!("../../../../tests/fixtures/cdse-odata-products-page.json");
const TILES: &str = include_str!("../../data/allowed_tiles.txt");
/// CDSE's largest `$top`: the page the polling fetcher reads.
pub const PAGE_SIZE: usize = 1_000;

/// Allowed tiles from the built-in list, and as many well-formed ones that are not on it.
pub fn sample_tiles(count: usize) -> (Vec<String>, Vec<String>) {
    let set = TileSet::built_in();
    let allowed: Vec<String> = TILES
        .lines()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .step_by(TILES.lines().count() / count)
        .take(count)
        .map(str::to_owned)
        .collect();
    let other: Vec<String> = (0..)
        .map(|n| format!("{:02}ZZ{}", n % 61, (b'A' + (n % 26) as u8) as char))
        .filter(|t| !set.contains(t))
        .take(count)
        .collect();
    (allowed, other)
}

/// A full page: the real fixture product repeated with its own id, name and tile
/// (nine in ten on allowed tiles), and the `@odata.count` of a first page.
pub fn thousand_product_page() -> Vec<u8> {
    let fixture: Value = serde_json::from_str(ODATA_PAGE).expect("fixture is JSON");
    let template = &fixture["value"][0];
    let (allowed, other) = sample_tiles(PAGE_SIZE);
    let products: Vec<Value> = (0..PAGE_SIZE)
        .map(|n| {
            let tile = if n % 10 == 9 { &other[n] } else { &allowed[n] };
            let mut product = template.clone();
            product["Id"] = format!("00000000-0000-4000-8000-{n:012}").into();
            product["Name"] =
                format!("S2A_MSIL1C_20240401T010311_N0511_R045_T{tile}_20240401T0{n:05}.SAFE")
                    .into();
            product
        })
        .collect();
    let mut page = fixture.clone();
    page["value"] = products.into();
    page["@odata.count"] = 12_000.into();
    serde_json::to_vec(&page).expect("a page serialises")
}
