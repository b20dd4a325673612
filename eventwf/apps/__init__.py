"""Programs built on the public API: the demo (``eventwf demo``) and the example."""
