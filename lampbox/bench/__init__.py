"""The headless benchmark (`lampbox bench`): grids of pipeline runs and their results table;
reports of stored benches (`lampbox report`) and comparisons of two runs (`lampbox compare`)."""
