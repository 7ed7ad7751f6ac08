//! Empty library: the models live in `tests/`, compiled only under `--cfg loom`.
