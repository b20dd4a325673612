"""The demo app, ``python -m eventwf demo``: a live task board in the browser.

``board``: the agent and its task workflow, with the per-board caps; ``boards``: which
boards are in memory (bounded, idle ones evicted); ``site``: HTTP and WebSocket on one
port; ``run``: ``serve_demo`` and the command. Requirements: specs/demo.md.
"""

from .board import DemoAgent as DemoAgent
from .board import DemoTask as DemoTask
from .run import MAX_BOARDS as MAX_BOARDS
from .run import DemoServer as DemoServer
from .run import main as main
from .run import serve_demo as serve_demo

__all__ = ["MAX_BOARDS", "DemoAgent", "DemoServer", "DemoTask", "main", "serve_demo"]
