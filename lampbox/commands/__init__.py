"""The CLI's subcommands, one module per group (lampbox.cli wires them together)."""
