"""rlhf: models, generation, training and runs for RLHF Studio.

This package never imports gradio or ``studio``; it reads its training data from files.
Command line: ``python -m rlhf --help`` (the same commands as ``rlhf-studio``).
"""
