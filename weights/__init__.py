"""The weights manifest and its tooling; installed as the data package ffzoo.presets_data."""
