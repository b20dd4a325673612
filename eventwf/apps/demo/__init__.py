"""The demo app, ``python -m eventwf demo``: a live task board in the browser.

``board``: the agent and its task workflow, with the per-board caps; ``boards``: which
boards are in memory (bounded, idle ones evicted); ``site``: HTTP and WebSocket on one
port; ``run``: ``serve_demo`` and the command. Requirements: specs/demo.md.
"""

from eventwf.apps.demo.board import DemoAgent as DemoAgent
from eventwf.apps.demo.board import DemoTask as DemoTask
from eventwf.apps.demo.run import MAX_BOARDS as MAX_BOARDS
from eventwf.apps.demo.run import DemoServer as DemoServer
from eventwf.apps.demo.run import main as main
from eventwf.apps.demo.run import serve_demo as serve_demo

__all__ = ["MAX_BOARDS", "DemoAgent", "DemoServer", "DemoTask", "main", "serve_demo"]
