"""Widgets shared by the lampbox screens."""
