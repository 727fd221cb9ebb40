"""annotations: the DuckDB store behind RLHF Studio (projects, prompts, replies, rankings).

It imports nothing else of the studio and no torch or gradio, so it stays light and fast.

    from annotations.store import Store
    store = Store("studio.duckdb")      # creates or upgrades the file
"""
