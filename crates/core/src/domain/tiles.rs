//! The MGRS tiles HLS processes.

use std::collections::HashSet;

use crate::domain::granule::is_tile_id;
use crate::domain::text::short;

/// The list HLS processes, compiled into the binary so no file must ship beside it.
const BUILT_IN_TILES: &str = include_str!("../../data/allowed_tiles.txt");

#[derive(Debug, Clone)]
pub struct TileSet {
    tiles: HashSet<[u8; 5]>,
}

#[derive(Debug, thiserror::Error)]
pub enum TileListError {
    #[error("tile list line {line}: {value:?} is not a tile id (5 characters of 0-9, A-Z)")]
    BadLine { line: usize, value: String },
    #[error("tile list is empty")]
    Empty,
}

impl TileSet {
    /// A list given by the deployment (`ALLOWED_TILES_FILE`) is read by the
    /// settings and handed to [`TileSet::parse`].
    pub fn built_in() -> Self {
        Self::parse(BUILT_IN_TILES).expect("the built-in tile list is valid")
    }

    /// One tile id per line; blank lines are ignored.
    pub fn parse(text: &str) -> Result<Self, TileListError> {
        let mut tiles = HashSet::with_capacity(text.len() / 6);
        for (index, line) in text.lines().enumerate() {
            let value = line.trim();
            if value.is_empty() {
                continue;
            }
            if !is_tile_id(value) {
                return Err(TileListError::BadLine {
                    line: index + 1,
                    value: short(value, 40),
                });
            }
            tiles.insert(key(value).expect("checked above"));
        }
        if tiles.is_empty() {
            return Err(TileListError::Empty);
        }
        Ok(Self { tiles })
    }

    pub fn contains(&self, tile_id: &str) -> bool {
        key(tile_id).is_some_and(|k| self.tiles.contains(&k))
    }

    pub fn len(&self) -> usize {
        self.tiles.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tiles.is_empty()
    }
}

fn key(tile_id: &str) -> Option<[u8; 5]> {
    tile_id.as_bytes().try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_list_has_every_hls_tile() {
        let tiles = TileSet::built_in();
        assert_eq!(tiles.len(), 18_952);
        assert!(tiles.contains("01FBE"));
        // 28PHQ is the tile of the real push notification fixture.
        assert!(tiles.contains("28PHQ"));
    }

    #[test]
    fn unlisted_and_malformed_tiles_are_rejected() {
        let tiles = TileSet::built_in();
        assert!(!tiles.contains("99ZZZ"));
        assert!(!tiles.contains("01fbe"));
        assert!(!tiles.contains("01FB"));
        assert!(!tiles.contains("01FBEX"));
        assert!(!tiles.contains(""));
    }

    #[test]
    fn a_custom_list_replaces_the_built_in_one() {
        let tiles = TileSet::parse("99ZZZ\n\n 01ABC \n").unwrap();
        assert_eq!(tiles.len(), 2);
        assert!(tiles.contains("99ZZZ"));
        assert!(!tiles.contains("01FBE"));
        let err = TileSet::parse("01ABC\nnope\n").unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
        assert!(matches!(TileSet::parse("\n"), Err(TileListError::Empty)));
    }
}
