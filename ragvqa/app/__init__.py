"""The Gradio demo (UI only; every answer comes from :mod:`ragvqa.pipeline`).

- :mod:`ragvqa.app.demo`: ``build_app(pipeline) -> gr.Blocks`` and ``launch``;
- :mod:`ragvqa.app.render`: HTML for the answer and its evidence (escaped).

Start it with ``ragvqa demo --kb KB_DIR``. Importing this package imports
nothing heavy; gradio is imported when the app is built.
"""
