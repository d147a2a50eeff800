"""The headless benchmark (`lampbox bench`): grids of pipeline runs and their results table."""
