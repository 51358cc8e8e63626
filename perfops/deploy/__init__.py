"""Process files and helpers for running perfops (make serve, make demo)."""
