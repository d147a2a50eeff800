"""The screens of the lampbox TUI."""
