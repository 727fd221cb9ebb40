"""Start RLHF Studio: ``python launch.py [--host 127.0.0.1] [--port 7860] [--db studio.duckdb] [--share]``."""

import argparse
import sys

from studio.app import add_server_arguments, serve

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Start RLHF Studio in this process.")
    add_server_arguments(parser)
    sys.exit(serve(parser.parse_args()))
