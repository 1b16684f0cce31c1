"""The browser demo (`lavis-ib serve`): the model wrapper with plain-Python callbacks (`model`)
and the Gradio page (`page`), imported only when serving."""
