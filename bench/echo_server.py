"""The floor for bench.annotation_load: a Gradio app whose endpoint does nothing.

    python -m bench.echo_server PORT

Same queue settings and auth as the studio, so gradio_client and Gradio cost the same;
the difference to the studio's submit-and-load-next is what the studio itself adds.
"""

import sys

import gradio as gr

if __name__ == "__main__":
    with gr.Blocks() as demo:
        box = gr.Textbox()
        out = gr.Textbox()
        box.submit(lambda text: text, box, out, api_name="echo")
    demo.queue(default_concurrency_limit=8).launch(
        server_name="127.0.0.1", server_port=int(sys.argv[1]), auth=lambda user, password: password == "load-test-password"
    )
