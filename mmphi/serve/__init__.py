"""Front ends that serve a model: the Gradio app (``mmphi app``) and the OpenAI-compatible API (``mmphi serve``)."""
