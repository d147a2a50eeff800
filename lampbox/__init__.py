"""lampbox: a terminal sandbox for personalizing LLMs with the LaMP benchmark."""

__version__ = "0.1.0"
