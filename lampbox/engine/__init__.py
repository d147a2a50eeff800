"""The engine: tasks, metrics, retrieval, prompting, generation and the run pipeline.

Importing it must stay light: heavy backends (torch, llama_cpp) load only when chosen, and
nothing here imports textual.
"""
