//! Node configuration: TOML file, `GREGOR_*` environment, flags.
