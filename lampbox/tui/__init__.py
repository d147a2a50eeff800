"""The lampbox TUI (Textual): browse the store user by user. `create_app` builds the app."""

from lampbox.tui.app import LampboxApp, create_app

__all__ = ["LampboxApp", "create_app"]
