"""studio: RLHF Studio's Gradio screens and the ``rlhf-studio`` command.

One module per screen, each with ``build(ctx) -> gr.Blocks`` that also runs alone
(``python -m studio.chat``); ``studio.app`` composes them as tabs.
"""
