"""The engine: pure computation. Tasks, metrics, retrieval, prompting, generation, methods,
scoring (and, next, training).

It never imports lampbox.store or duckdb: the caches it uses arrive as the small protocols of
`lampbox.engine.caches`. Importing it must stay light: heavy backends (torch, llama_cpp) load
only when chosen, and nothing here imports textual.
"""
