"""The model: its card, its preparation recipes, its session and its decision rule."""

#: The environment variable naming the model when ``--model`` is not given. Here, so that
#: the light path of a one-shot answered by a server names it without loading anything.
MODEL_ENV = "FRAMEQC_MODEL"
